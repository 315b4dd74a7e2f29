#!/usr/bin/python3
"""Lifecycle of pg_notifier's background worker, on a cluster of its own.

It kills server processes (kill -9 makes the postmaster reinitialise and log
"terminated by signal 9", which test/run's log check rightly calls a crash),
so it does NOT use the cluster test/run started: it runs initdb in a fresh
temporary directory as the OS user postgres, starts that cluster with
shared_preload_libraries = 'pg_notifier', and always stops it and removes the
directory at the end (also on failure, watchdog, SIGTERM or Ctrl-C).

What it checks (every wait is a poll with a generous deadline; the printed
times are measurements, not assertions):

  1. two databases, one worker each: lc_one and lc_two, created after the
     server started, each with a queue route on the SAME channel; events of
     lc_one land only in lc_one's queue, lc_two's only in lc_two's, complete
     and in order; notifier.status() lists postgres ('waiting for
     extension'), lc_one and lc_two with distinct pids; pg_stat_activity
     shows a 'pg_notifier worker' per database and one 'pg_notifier launcher'.
  2. a database named in pg_notifier.databases that does not exist
     (lc_missing, added with ALTER SYSTEM + pg_reload_conf()): status says
     'database missing', the server log has exactly one message about it
     after ~25 s, and after CREATE DATABASE + CREATE EXTENSION its worker
     appears and forwards.  The other workers keep their pids on the reload.
  3. SIGHUP: with pg_notifier.payload_retention = 86400 (set at start) rows
     of notifier.payloads 2 hours old survive an oversize event; after
     ALTER SYSTEM SET pg_notifier.payload_retention = 3600 + reload they are
     pruned after the next oversize event while younger rows stay; the worker
     keeps its pid and keeps forwarding; oversize references are resolved.
  4. SIGTERM (pg_terminate_backend) of a worker: it is gone at once; a new
     worker (new pid) comes back and forwards.
  5. kill -9 of a worker: the postmaster reinitialises; launcher and workers
     come back with new pids; routes and queued events persist; events
     committed after the routes are listened again arrive.
  6. pg_ctl restart -m fast, and pg_ctl stop -m fast (timed) + start:
     workers come back, routes persist, forwarding works.
  7. pg_ctl stop -m fast while a worker drains a burst of 200k events: it
     stops (timed), no event is written twice, and after a start forwarding
     works.
  8. a database without the extension (postgres): its worker stays
     'waiting for extension' with the same pid for >= 15 s and logs at most
     one message about it.
  Finally the server log: no PANIC, no TRAP, no process terminated by a
  signal other than our one kill -9, no crash exit code, exactly one
  reinitialisation.

Run it as root with Debian's python3 (psycopg 3.1):
    /usr/bin/python3 test/integration/test_worker_lifecycle.py
Environment: PG_MAJOR (15), PG_BIN or PG_CONFIG (where the server binaries
are), PG_OS_USER (postgres), PG_NOTIFIER_TEST_TIMEOUT (watchdog, 280 s),
PG_NOTIFIER_LIFECYCLE_BURST (200000), KEEP_TEST_DIR (keep the directory).
"""

import os
import signal
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, log  # noqa: E402
from owncluster import ClusterTest, poll, show_msgs  # noqa: E402

NAME = "test_worker_lifecycle"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "280"))
BURST = int(os.environ.get("PG_NOTIFIER_LIFECYCLE_BURST", "200000"))

CHANNEL = "lc_chan"
WORKER = "pg_notifier worker"
LAUNCHER = "pg_notifier launcher"
WORKING_STATES = ("listening", "forwarding")
STOP_LIMIT = 30.0   # generous bound for pg_ctl stop -m fast
DBS = ("lc_one", "lc_two", "lc_missing")     # with the extension, from step [missing] on



class Test(ClusterTest):
    def __init__(self):
        super().__init__(NAME, "pg_notifier.databases = 'postgres, lc_one, lc_two'\n"
                         "pg_notifier.payload_retention = 86400", TIMEOUT)
        self.expected = {}      # (db, tag) -> number of events
        self.pids = None        # database -> worker pid, at the end of step [dbs]
        self.st1 = None         # notifier.status() then

    # -- status / processes -----------------------------------------------
    def status(self, via="lc_one"):
        rows = self.cl.q(via, "SELECT database::text, pid, state, started_at, channels "
                              "FROM notifier.status() ORDER BY 1")
        return {r[0]: {"pid": r[1], "state": r[2], "started_at": r[3],
                       "channels": list(r[4] or [])} for r in rows}

    def procs(self):
        return self.cl.q("postgres", "SELECT pid, datname::text, backend_type, application_name "
                                     "FROM pg_stat_activity WHERE backend_type IN (%s, %s) "
                                     "ORDER BY pid", (WORKER, LAUNCHER))

    def launchers(self):
        return [p[0] for p in self.procs() if p[2] == LAUNCHER]

    def worker_pid_in_activity(self, db):
        return [p[0] for p in self.procs() if p[2] == WORKER and p[1] == db]

    def wait_listening(self, db, timeout, not_pid=None):
        """Until db's worker (another pid than not_pid) listens on CHANNEL."""
        def fn():
            row = self.status(via=db).get(db)
            ok = (row is not None and row["pid"] is not None and row["pid"] != not_pid
                  and row["state"] in WORKING_STATES and CHANNEL in row["channels"]
                  and row["pid"] in self.worker_pid_in_activity(db))
            return ok, row
        secs, row = poll(f"worker of {db} listening on {CHANNEL!r}"
                         + (f" with a pid other than {not_pid}" if not_pid else ""), timeout, fn)
        return secs, row

    # -- events -----------------------------------------------------------
    def setup_db(self, db):
        self.cl.q(db, "CREATE EXTENSION pg_notifier")
        self.cl.q(db, "CREATE TABLE lc_items (id bigserial PRIMARY KEY, db text NOT NULL, "
                      "tag text NOT NULL, note text)")
        self.cl.q(db, "SELECT notifier.watch('lc_items', channel => %s, delivery => 'notify')", (CHANNEL,))
        return self.cl.one(db, "SELECT notifier.add_queue(%s)", (CHANNEL,))

    def produce(self, db, tag, n):
        self.cl.q(db, "INSERT INTO lc_items (db, tag) "
                      "SELECT current_database(), %s FROM generate_series(1, %s)", (tag, n))
        self.expected[(db, tag)] = self.expected.get((db, tag), 0) + n

    def produce_big(self, db, tag, size=3000):
        """One oversize event (stored in notifier.payloads, sent as a ref);
        returns the notifier.payloads id it got."""
        before = self.cl.one(db, "SELECT coalesce(max(id), 0) FROM notifier.payloads")
        self.cl.q(db, "SET pg_notifier.max_payload_bytes = 1024")
        try:
            self.cl.q(db, "INSERT INTO lc_items (db, tag, note) "
                          "VALUES (current_database(), %s, repeat('x', %s))", (tag, size))
        finally:
            self.cl.q(db, "RESET pg_notifier.max_payload_bytes")
        self.expected[(db, tag)] = self.expected.get((db, tag), 0) + 1
        ids = [r[0] for r in self.cl.q(db, "SELECT id FROM notifier.payloads WHERE id > %s",
                                       (before,))]
        if len(ids) != 1:
            raise TestFailure(f"{db}: an oversize event should store one row in "
                              f"notifier.payloads, it stored {len(ids)}")
        return ids[0]

    def count_tag(self, db, tag):
        return self.cl.one(db, "SELECT count(*) FROM notifier.queue "
                               "WHERE channel = %s AND payload->'row'->>'tag' = %s",
                           (CHANNEL, tag))

    def wait_arrived(self, db, tag, timeout=15):
        n = self.expected[(db, tag)]
        secs, got = poll(f"{db}: {n} events tagged {tag!r} in notifier.queue", timeout,
                         lambda: (lambda c: (c >= n, c))(self.count_tag(db, tag)), interval=0.05)
        if got != n:
            raise TestFailure(f"{db}: {got} events tagged {tag!r} in notifier.queue, "
                              f"expected exactly {n}")
        # complete and in NOTIFY order: the rows' ids increase with the queue's
        ids = [r[0] for r in self.cl.q(db, "SELECT (payload->'row'->>'id')::bigint "
                                           "FROM notifier.queue WHERE channel = %s "
                                           "AND payload->'row'->>'tag' = %s ORDER BY id",
                                       (CHANNEL, tag))]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise TestFailure(f"{db}: events tagged {tag!r} not in order or duplicated: "
                              f"{ids[:20]}...")
        return secs

    def check_isolation(self, db):
        foreign = self.cl.q(db, "SELECT payload->'row'->>'db', count(*) FROM notifier.queue "
                                "WHERE payload ? 'row' AND payload->'row'->>'db' "
                                "IS DISTINCT FROM current_database() GROUP BY 1")
        if foreign:
            raise TestFailure(f"{db}'s queue holds events of other databases: {foreign}")

    def check_all_counts(self, where):
        for (db, tag), n in sorted(self.expected.items()):
            got = self.count_tag(db, tag)
            if got != n:
                raise TestFailure(f"{where}: {db} has {got} events tagged {tag!r} in "
                                  f"notifier.queue, expected {n} (lost or written twice)")

    def check_routes(self, db, where):
        n = self.cl.one(db, "SELECT count(*) FROM notifier.routes WHERE channel = %s",
                        (CHANNEL,))
        if n != 1:
            raise TestFailure(f"{where}: {db} has {n} routes for {CHANNEL!r}, expected 1")

    # =======================================================================
    def setup(self):
        log(f"cluster started on 127.0.0.1:{self.cl.port} "
            f"(pg_notifier.databases = 'postgres, lc_one, lc_two')")

    # --- 1. two databases, each with its own worker --------------------
    def step_dbs(self):
        cl = self.cl
        log("1. two databases with a worker each, same channel name")
        routes = {}
        for db in ("lc_one", "lc_two"):
            cl.q("postgres", f"CREATE DATABASE {db}")
        t0 = time.monotonic()
        cl.q("postgres", "SELECT pg_reload_conf()")
        for db in ("lc_one", "lc_two"):
            routes[db] = self.setup_db(db)
        for db in ("lc_one", "lc_two"):
            secs, _ = self.wait_listening(db, timeout=25)
        secs = time.monotonic() - t0
        self.timing("workers of new databases listening (after reload)", secs)
        log(f"   workers of lc_one and lc_two listen on {CHANNEL!r} "
            f"{secs:.1f}s after CREATE DATABASE + pg_reload_conf()")

        def all_three():
            st = self.status()
            ok = (set(st) == {"postgres", "lc_one", "lc_two"}
                  and st["postgres"]["state"] == "waiting for extension"
                  and all(st[d]["pid"] is not None for d in st))
            return ok, st
        _, st = poll("notifier.status() lists postgres (waiting for extension), lc_one, lc_two",
                     15, all_three)
        pids = {d: st[d]["pid"] for d in st}
        if len(set(pids.values())) != 3:
            raise TestFailure(f"notifier.status() pids are not distinct: {pids}")
        log("   notifier.status(): " + ", ".join(
            f"{d}={st[d]['pid']} '{st[d]['state']}'" for d in sorted(st)))

        def activity():
            pr = self.procs()
            workers = {p[1]: p for p in pr if p[2] == WORKER}
            launch = [p for p in pr if p[2] == LAUNCHER]
            ok = (len(launch) == 1 and set(workers) == {"postgres", "lc_one", "lc_two"}
                  and all(workers[d][0] == pids[d] for d in workers)
                  and len([p for p in pr if p[2] == WORKER]) == 3)
            return ok, pr
        _, pr = poll("pg_stat_activity: one 'pg_notifier launcher' and one 'pg_notifier worker' "
                     "per database, with the pids of notifier.status()", 10, activity)
        bad_app = [p for p in pr if p[2] == WORKER and p[3] != WORKER]
        if bad_app:
            raise TestFailure(f"worker application_name is not {WORKER!r}: {bad_app}")
        launcher_pid = [p[0] for p in pr if p[2] == LAUNCHER][0]
        log(f"   pg_stat_activity: launcher {launcher_pid}, workers "
            + ", ".join(f"{p[1]}={p[0]}" for p in pr if p[2] == WORKER))

        self.produce("lc_one", "p1", 20)
        self.produce("lc_two", "p1", 30)
        s1 = self.wait_arrived("lc_one", "p1")
        s2 = self.wait_arrived("lc_two", "p1")
        time.sleep(1.0)     # nothing more may come
        for db in ("lc_one", "lc_two"):
            self.check_isolation(db)
        self.check_all_counts("1.")
        self.timing("20 events into lc_one's queue", s1)
        log(f"   20 events of lc_one only in lc_one's queue ({s1:.2f}s), "
            f"30 of lc_two only in lc_two's ({s2:.2f}s)")
        self.pids, self.st1 = pids, st

    # --- 2. a missing database, 3. SIGHUP, 4. SIGTERM, 8. waiting without the
    # extension: one step, so that their waits overlap
    def step_missing(self):
        cl, pids, st = self.cl, self.pids, self.st1
        # phase 8 starts here: the postgres worker waits for the extension
        p8_pid, p8_started = st["postgres"]["pid"], st["postgres"]["started_at"]
        p8_t0 = time.monotonic()
        p8_msgs0 = len([m for m in cl.messages() if m["pid"] == p8_pid])

        # --- 2a. a database that does not exist ------------------------------
        log("2. a database in pg_notifier.databases that does not exist (lc_missing)")
        cl.q("postgres", "ALTER SYSTEM SET pg_notifier.databases = "
                         "'postgres, lc_one, lc_two, lc_missing'")
        cl.q("postgres", "SELECT pg_reload_conf()")

        def missing():
            st = self.status()
            row = st.get("lc_missing")
            return row is not None and row["state"] == "database missing", st
        secs, st = poll("notifier.status() shows lc_missing as 'database missing'", 15, missing)
        t_missing = time.monotonic()
        log(f"   lc_missing is 'database missing' {secs:.1f}s after the reload; "
            "checking the log about it after ~25 s")
        for db in ("postgres", "lc_one", "lc_two"):
            if st[db]["pid"] != pids[db]:
                raise TestFailure(f"adding lc_missing to pg_notifier.databases restarted the "
                                  f"worker of {db}: pid {pids[db]} -> {st[db]['pid']}")

        # --- 3. SIGHUP: payload_retention, pruning ------------------------------
        log("3. SIGHUP: pg_notifier.payload_retention, pruning of notifier.payloads")
        pid3 = self.status()["lc_one"]["pid"]
        old_ids = [r[0] for r in cl.q("lc_one",
                   "INSERT INTO notifier.payloads (event, created_at) "
                   "SELECT json_build_object('old', g), now() - interval '2 hours' "
                   "FROM generate_series(1, 5) g RETURNING id")]
        young_id = cl.one("lc_one", "INSERT INTO notifier.payloads (event, created_at) "
                                    "VALUES ('{\"young\":1}', now() - interval '30 minutes') "
                                    "RETURNING id")
        big1 = self.produce_big("lc_one", "p3a")
        self.wait_arrived("lc_one", "p3a")
        full = cl.q("lc_one", "SELECT length(payload->'row'->>'note'), payload ? 'ref', "
                              "payload ? 'truncated' FROM notifier.queue "
                              "WHERE payload->'row'->>'tag' = 'p3a'")[0]
        if full != (3000, False, False):
            raise TestFailure(f"the oversize event was not resolved into the full event: "
                              f"(note length, has ref, has truncated) = {full}")
        # the worker prunes at its periodic check (every 10 s, CHECK_SECONDS in
        # worker.c) once an oversize event was stored: give it one whole period,
        # so that "the rows stay" means it looked and kept them.  (This wait
        # overlaps with the 25 s of step 2, so it costs next to nothing.)
        time.sleep(11.0)
        n_old = cl.one("lc_one", "SELECT count(*) FROM notifier.payloads WHERE id = ANY(%s)",
                       (old_ids,))
        if n_old != len(old_ids):
            raise TestFailure(f"with pg_notifier.payload_retention = 86400 the worker pruned "
                              f"{len(old_ids) - n_old} of {len(old_ids)} rows only 2 hours old")
        log("   oversize event resolved in the queue; with retention 86400, rows 2 h old "
            "stay for 11 s (a whole prune period)")

        cl.q("postgres", "ALTER SYSTEM SET pg_notifier.payload_retention = 3600")
        cl.q("postgres", "SELECT pg_reload_conf()")
        time.sleep(1.0)     # let the worker take the SIGHUP before the next event
        with cl.connect("lc_one") as c:
            shown = c.execute("SHOW pg_notifier.payload_retention").fetchone()[0]
        big2 = self.produce_big("lc_one", "p3b")
        t0 = time.monotonic()
        self.wait_arrived("lc_one", "p3b")
        secs, left = poll("rows of notifier.payloads 2 hours old pruned with retention 3600",
                          15, lambda: (lambda n: (n == 0, f"{n} of them left"))(
                              cl.one("lc_one", "SELECT count(*) FROM notifier.payloads "
                                               "WHERE id = ANY(%s)", (old_ids,))), interval=0.2)
        secs = time.monotonic() - t0
        kept = {r[0] for r in cl.q("lc_one", "SELECT id FROM notifier.payloads "
                                             "WHERE id = ANY(%s)", ([young_id, big1, big2],))}
        if kept != {young_id, big1, big2}:
            raise TestFailure(f"pruning removed rows younger than the retention: kept "
                              f"{sorted(kept)} of {sorted([young_id, big1, big2])} "
                              f"(30 min old, just stored, just stored)")
        row = self.status()["lc_one"]
        if row["pid"] != pid3:
            raise TestFailure(f"the reload restarted lc_one's worker: pid {pid3} -> {row['pid']}")
        self.produce("lc_one", "p3c", 10)
        self.wait_arrived("lc_one", "p3c")
        self.timing("payloads older than retention pruned after the oversize event", secs)
        log(f"   after the reload (SHOW: {shown}) the 2 h old rows were pruned {secs:.1f}s "
            f"after the next oversize event; the 30 min old and new rows stay; "
            f"same pid {pid3}, still forwarding")

        # --- 4. SIGTERM of a worker --------------------------------------------
        log("4. SIGTERM (pg_terminate_backend) of lc_one's worker")
        old = self.status()["lc_one"]["pid"]
        t0 = time.monotonic()
        if cl.one("postgres", "SELECT pg_terminate_backend(%s)", (old,)) is not True:
            raise TestFailure(f"pg_terminate_backend({old}) did not signal the worker")
        gone, _ = poll(f"worker {old} gone from pg_stat_activity after SIGTERM", 5,
                       lambda: (old not in [p[0] for p in self.procs()], None), interval=0.02)
        back, row = self.wait_listening("lc_one", timeout=20, not_pid=old)
        back = time.monotonic() - t0
        self.produce("lc_one", "p4", 10)
        self.wait_arrived("lc_one", "p4")
        self.timing("worker gone after SIGTERM", gone)
        self.timing("new worker listening after SIGTERM", back)
        log(f"   worker {old} gone after {gone:.2f}s; new worker {row['pid']} listening after "
            f"{back:.1f}s and forwarding")

        # --- 8. (check) waiting without the extension ----------------------------
        log("8. the worker of 'postgres' (no extension) waits quietly")
        rest = 15.5 - (time.monotonic() - p8_t0)
        if rest > 0:
            time.sleep(rest)
        row = self.status()["postgres"]
        if (row["state"], row["pid"], row["started_at"]) != ("waiting for extension", p8_pid,
                                                            p8_started):
            raise TestFailure(f"the worker of postgres did not keep waiting with pid {p8_pid}: "
                              f"now {row}")
        if p8_pid not in self.worker_pid_in_activity("postgres"):
            raise TestFailure(f"worker {p8_pid} of postgres is not in pg_stat_activity")
        msgs = cl.messages()
        mine = [m for m in msgs if m["pid"] == p8_pid]
        about = [m for m in mine if "extension" in m["text"].lower()]
        if len(mine) != p8_msgs0 or len(about) > 1:
            raise TestFailure(f"the waiting worker {p8_pid} of postgres logged "
                              f"{len(mine) - p8_msgs0} message(s) in the last "
                              f"{time.monotonic() - p8_t0:.0f}s, {len(about)} about the "
                              f"extension in all:\n{show_msgs(mine)}")
        log(f"   worker {p8_pid} of postgres: 'waiting for extension', same pid and "
            f"started_at for {time.monotonic() - p8_t0:.0f}s, {len(about)} log message(s) "
            f"about it, none while waiting")

        # --- 2b. the missing database: one log message, then it appears ----------
        rest = 25.0 - (time.monotonic() - t_missing)
        if rest > 0:
            time.sleep(rest)
        msgs = cl.messages()
        about = [m for m in msgs if "lc_missing" in m["text"]
                 and not m["text"].startswith('parameter "')
                 and m["btype"] != "client backend"]
        if len(about) != 1:
            raise TestFailure(f"expected exactly one server log message about the missing "
                              f"database lc_missing in {time.monotonic() - t_missing:.0f}s, "
                              f"found {len(about)}:\n{show_msgs(about)}")
        if self.status()["lc_missing"]["state"] != "database missing":
            raise TestFailure("lc_missing no longer 'database missing' before it was created")
        log(f"   {time.monotonic() - t_missing:.0f}s with lc_missing missing: one log message: "
            f"{about[0]['text'].splitlines()[0]!r}")
        t0 = time.monotonic()
        cl.q("postgres", "CREATE DATABASE lc_missing")
        self.setup_db("lc_missing")
        secs, row = self.wait_listening("lc_missing", timeout=20)
        secs = time.monotonic() - t0
        self.produce("lc_missing", "p2", 15)
        self.wait_arrived("lc_missing", "p2")
        self.check_isolation("lc_missing")
        self.timing("worker of a created missing database listening (no reload)", secs)
        log(f"   after CREATE DATABASE lc_missing + CREATE EXTENSION its worker {row['pid']} "
            f"listens within {secs:.1f}s (no reload) and forwards")

    # --- 5. kill -9 of a worker ----------------------------------------------
    def step_kill9(self):
        cl, dbs = self.cl, DBS
        log("5. kill -9 of lc_one's worker (the postmaster reinitialises)")
        before = self.status()
        old_launcher = self.launchers()
        victim = before["lc_one"]["pid"]
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        self.killed.append(victim)
        cl.drop_all()
        time.sleep(0.3)
        secs, la = poll("a new pg_notifier launcher after the reinitialisation", 30,
                        lambda: (lambda l: (len(l) == 1 and l[0] not in old_launcher, l))(
                            self.launchers()), interval=0.2)
        for db in dbs:
            self.wait_listening(db, timeout=max(5, 30 - (time.monotonic() - t0)),
                                not_pid=before[db]["pid"])
        secs = time.monotonic() - t0
        after = self.status()
        same = [d for d in before if after.get(d, {}).get("pid") == before[d]["pid"]]
        if same:
            raise TestFailure(f"after the reinitialisation these workers kept their pid: {same}")
        if after["postgres"]["state"] != "waiting for extension":
            raise TestFailure(f"worker of postgres after the reinitialisation: {after['postgres']}")
        for db in dbs:
            self.check_routes(db, "after kill -9")
        self.check_all_counts("after kill -9")
        for db in dbs:
            self.produce(db, "p5", 12)
        for db in dbs:
            self.wait_arrived(db, "p5")
        self.timing("launcher + workers back and listening after kill -9", secs)
        log(f"   launcher {old_launcher} -> {la}; workers "
            + ", ".join(f"{d} {before[d]['pid']} -> {after[d]['pid']}" for d in sorted(after))
            + f"; all listening {secs:.1f}s after the kill; routes and queued events "
            "persisted; new events forwarded")

    # --- 6. restart, stop ------------------------------------------------------
    def step_restart(self):
        cl, dbs = self.cl, DBS
        log("6. pg_ctl restart -m fast; pg_ctl stop -m fast + start")
        before = self.status()
        took = cl.restart()
        t0 = time.monotonic()
        for db in dbs:
            self.wait_listening(db, timeout=30, not_pid=before[db]["pid"])
        secs = time.monotonic() - t0
        for db in dbs:
            self.check_routes(db, "after restart")
        self.check_all_counts("after restart")
        for db in dbs:
            self.produce(db, "p6", 7)
        for db in dbs:
            self.wait_arrived(db, "p6")
        self.timing("pg_ctl restart -m fast", took)
        self.timing("workers listening after restart", secs)
        log(f"   pg_ctl restart -m fast took {took:.1f}s; workers listening {secs:.1f}s "
            "later; routes persisted; forwarding works")
        took = cl.stop("fast")
        self.timing("pg_ctl stop -m fast (idle workers)", took)
        log(f"   pg_ctl stop -m fast (idle workers) took {took:.2f}s")
        if took > STOP_LIMIT:
            raise TestFailure(f"pg_ctl stop -m fast took {took:.1f}s (limit {STOP_LIMIT}s)")
        cl.start()
        for db in dbs:
            self.wait_listening(db, timeout=30)

    # --- 7. fast shutdown while a worker is busy ----------------------------------
    def step_busy(self):
        cl, dbs = self.cl, DBS
        log(f"7. pg_ctl stop -m fast while lc_one's worker drains {BURST} events")
        t0 = time.monotonic()
        cl.q("lc_one", "SELECT count(pg_notify(%s, '{\"burst\":' || g || '}')) "
                       "FROM generate_series(1, %s) g", (CHANNEL, BURST))
        commit = time.monotonic() - t0

        def burst_count():
            return cl.one("lc_one", "SELECT count(*) FROM notifier.queue WHERE payload ? 'burst'")
        _, n_seen = poll("the worker writing the burst into lc_one's queue", 30,
                         lambda: (lambda n: (n > 0, n))(burst_count()), interval=0.02)
        state = self.status()["lc_one"]["state"]
        took = cl.stop("fast")
        self.timing(f"pg_ctl stop -m fast (worker busy with {BURST} events)", took)
        log(f"   burst committed in {commit:.1f}s; {n_seen} written when stopping "
            f"(worker state '{state}'); pg_ctl stop -m fast took {took:.2f}s")
        if took > STOP_LIMIT:
            raise TestFailure(f"pg_ctl stop -m fast with a busy worker took {took:.1f}s "
                              f"(limit {STOP_LIMIT}s)")
        cl.start()
        for db in dbs:
            self.wait_listening(db, timeout=30)
        n, distinct = cl.q("lc_one", "SELECT count(*), count(DISTINCT payload->>'burst') "
                                     "FROM notifier.queue WHERE payload ? 'burst'")[0]
        if n != distinct or n > BURST:
            raise TestFailure(f"burst events written twice: {n} rows, {distinct} distinct")
        self.check_all_counts("after the stop during the burst")
        for db in dbs:
            self.produce(db, "p7", 9)
        for db in dbs:
            self.wait_arrived(db, "p7")
        log(f"   after the start: {n} of {BURST} burst events in the queue, none twice "
            "(the rest died with the NOTIFY queue, as designed); forwarding works")


STEPS = [
    Step("dbs", "1. two databases, a worker each", Test.step_dbs, needed=True),
    Step("missing", "2. a missing database, 3. SIGHUP, 4. SIGTERM, 8. waiting without the "
         "extension", Test.step_missing, needed=True),
    Step("kill9", "5. kill -9 of a worker", Test.step_kill9),
    Step("restart", "6. pg_ctl restart -m fast, stop -m fast + start", Test.step_restart),
    Step("busy", "7. pg_ctl stop -m fast while a worker is busy", Test.step_busy),
]


if __name__ == "__main__":
    Test().run(STEPS)
