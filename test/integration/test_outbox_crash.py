#!/usr/bin/python3
"""pg_notifier's outbox delivery mode (delivery => 'outbox') across worker
crashes, immediate restarts and a webhook receiver outage, on a cluster of its
own.

It kills server processes (kill -9 makes the postmaster reinitialise and log
"terminated by signal 9", which test/run's log check rightly calls a crash), so
it does NOT use the cluster test/run started: owncluster.Cluster runs initdb
in a fresh temporary directory (shared_preload_libraries = 'pg_notifier',
pg_notifier.databases = 'ob', retry_base_ms 50, retry_max_ms 500,
synchronous_commit on: a commit must survive the crash), always stopped and
removed at the end.

Producers (threads, a connection each) commit multi-row transactions (1..60
rows; bodies of 1 byte to 12 kB) into a table watched with delivery =>
'outbox'.  Every row has a unique (phase, n) and records its transaction's
xid.  A producer reconnects and goes on when its connection drops; a
transaction whose COMMIT got no answer is decided afterwards by whether its
rows exist.  The watched table is the truth: every row of it is a committed
event.

  1. kill -9 of the worker in a loop (each time the worker is back, 0.15-0.35 s
     later) while 4 producers commit 200,000 events; queue route: every
     committed event in notifier.queue exactly once (by key and by event id,
     with its transaction's xid), none of a transaction that did not commit,
     each transaction's events in order, the outbox empty;
  2. pg_ctl restart -m immediate, 3 times (at 25/50/75 % of the workload) while
     4 producers commit 30,000 events: the same;
  3. a webhook route (batch_size 10, concurrency 4) and its receiver stopped
     while 2 producers commit 6,000 events (connections refused meanwhile),
     then started again on the same port: every committed event in
     notifier.deliveries exactly once and delivered, at the receiver at least
     once; duplicates only of requests in flight when it stopped (the
     request was never answered, or its webhook-id was repeated), at most
     concurrency x batch_size;
  finally the server log: no PANIC, no TRAP, no process terminated by a signal
  other than our kill -9s, one reinitialisation per kill.

Run it as root with Debian's python3 (psycopg 3.1):
    /usr/bin/python3 test/integration/test_outbox_crash.py
Environment: PG_MAJOR (15), PG_BIN or PG_CONFIG, PG_OS_USER (postgres),
PG_NOTIFIER_TEST_TIMEOUT (watchdog, 240 s), KEEP_TEST_DIR.
"""

import collections
import os
import random
import signal
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from itlib import Step, TestFailure, log  # noqa: E402
from owncluster import ClusterTest, poll  # noqa: E402
from recorder import Receiver  # noqa: E402

NAME = "test_outbox_crash"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
DB = "ob"
WORKER = "pg_notifier worker"
KILL_EVENTS = 200_000
RESTART_EVENTS = 30_000
DOWN_EVENTS = 6_000
WH_CONCURRENCY, WH_BATCH = 4, 10
# the row's body, made by the server: mostly tiny, some 300 B / 2 kB, a few 12 kB
BODY = ("CASE WHEN g %% 97 = 0 THEN repeat(md5(g::text), 375) "
        "WHEN g %% 13 = 0 THEN repeat('y', 2000) WHEN g %% 5 = 0 THEN repeat('z', 300) "
        "ELSE 'b' END")


class Producers:
    """nprod threads committing about `total` rows of `phase` into `table`,
    transactions of 1..60 rows; they reconnect after a dropped connection.
    attempts: (p, t, rows, outcome) with outcome 'ok' (COMMIT answered),
    'failed' (error before COMMIT), 'unknown' (no answer to COMMIT)."""

    def __init__(self, cl, table, phase, total, nprod, seed, max_rows=60):
        self.cl, self.table, self.phase = cl, table, phase
        self.max_rows = max_rows
        self.share = total // nprod
        self.nprod = nprod
        self.seed = seed
        self.lock = threading.Lock()
        self.attempts = []
        self.ok_rows = 0
        self.errors = []
        self.reconnects = 0
        self.threads = []

    def start(self):
        for p in range(self.nprod):
            t = threading.Thread(target=self._run, args=(p,), daemon=True)
            t.start()
            self.threads.append(t)

    def alive(self):
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if self.alive():
            raise TestFailure(f"phase {self.phase}: producers still running after {timeout}s")
        if self.errors:
            raise TestFailure(f"phase {self.phase}: producer errors: {self.errors[:3]}")

    def _connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.cl.connect(DB)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _run(self, p):
        rnd = random.Random(self.seed * 100 + p)
        conn = None
        mine = 0
        t = 0
        q = (f"INSERT INTO {self.table} (phase, n, p, t, j, body) "
             f"SELECT %s, %s::bigint * 1000000000 + %s::bigint * 1000 + g, %s, %s, g, {BODY} "
             f"FROM generate_series(1, %s) g")
        try:
            while mine < self.share:
                n = min(rnd.randint(1, self.max_rows), self.share - mine)
                t += 1
                stage = "connect"
                try:
                    if conn is None or conn.closed or conn.broken:
                        if conn is not None:
                            self.reconnects += 1
                        conn = self._connect()
                    stage = "insert"
                    conn.execute("BEGIN")
                    conn.execute(q, (self.phase, p, t, p, t, n))
                    stage = "commit"
                    conn.execute("COMMIT")
                    outcome = "ok"
                    mine += n
                except psycopg.OperationalError:
                    outcome = "unknown" if stage == "commit" else "failed"
                    try:
                        conn.close()
                    except Exception:
                        pass
                    time.sleep(0.02)
                with self.lock:
                    self.attempts.append((p, t, n, outcome))
                    if outcome == "ok":
                        self.ok_rows += n
        except BaseException as ex:   # noqa: B902 -- reported by join()
            self.errors.append(f"producer {p}: {type(ex).__name__}: {ex}")
        finally:
            if conn is not None:
                conn.close()


class Test(ClusterTest):
    """The phases; a subclass (test_durability.py) runs them with other
    watches and settings."""
    NAME = NAME
    WATCH = ", delivery => 'outbox'"                    # the watches' delivery option
    SETTINGS = f"pg_notifier.databases = '{DB}'\n"
    TXN_ROWS = 60                                       # rows per transaction: 1..TXN_ROWS
    KILL_EVENTS = KILL_EVENTS                           # events of the kill -9 phase

    def __init__(self):
        super().__init__(self.NAME, self.SETTINGS + "pg_notifier.retry_base_ms = 50\n"
                         "pg_notifier.retry_max_ms = 500", TIMEOUT, Receiver(delay=0.02))
        self.rid = None

    def worker_pid(self):
        rows = self.cl.q("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = %s "
                                     "AND datname = %s", (WORKER, DB))
        return rows[0][0] if rows else None

    def wait_worker(self, timeout, not_pid=None):
        return poll(f"a worker of {DB}" + (f" other than {not_pid}" if not_pid else ""), timeout,
                    lambda: (lambda w: (w is not None and w != not_pid, w))(self.worker_pid()),
                    interval=0.05)

    # -- the checks ----------------------------------------------------------
    def check_attempts(self, prod, table):
        """Each attempt's rows are all there or none; COMMIT answered: there;
        error before COMMIT: not there.  Returns committed rows."""
        got = {(p, t): k for p, t, k in self.cl.q(
            DB, f"SELECT p, t, count(*) FROM {table} WHERE phase = %s GROUP BY 1, 2", (prod.phase,))}
        outcomes = collections.Counter()
        bad = []
        for p, t, n, outcome in prod.attempts:
            k = got.get((p, t), 0)
            if k not in (0, n):
                bad.append(f"transaction {p}/{t}: {k} of its {n} rows")
            elif outcome == "ok" and k == 0:
                bad.append(f"transaction {p}/{t}: COMMIT answered, rows gone")
            elif outcome == "failed" and k:
                bad.append(f"transaction {p}/{t}: failed before COMMIT, rows there")
            outcomes[(outcome, "committed" if k else "not committed")] += 1
        extra = set(got) - {(p, t) for p, t, _, _ in prod.attempts}
        if extra:
            bad.append(f"rows of transactions nobody made: {sorted(extra)[:3]}")
        if bad:
            raise TestFailure(f"phase {prod.phase}: the database lost or invented committed rows "
                              f"(not pg_notifier's doing): {bad[:5]}")
        rows = sum(got.values())
        log("   transactions: " + ", ".join(f"{o} -> {c}: {k}" for (o, c), k in sorted(outcomes.items()))
            + f"; {rows} committed rows ({prod.reconnects} reconnects)")
        return rows

    def check_queue(self, phase, table, channel, rows):
        """Every committed row's event in notifier.queue exactly once."""
        q = self.cl.q
        # fresh statistics: the anti-joins below must not be planned as
        # nested loops over tables the planner thinks empty
        q(DB, f"ANALYZE {table}, notifier.queue")
        stats = q(DB, "SELECT count(*), count(DISTINCT payload->>'id'), "
                      "count(DISTINCT (payload->'key'->>'n')::bigint), "
                      "count(*) FILTER (WHERE payload->>'op' <> 'INSERT' "
                      "   OR payload->>'xid' <> payload->'row'->>'x' "
                      "   OR payload->'row'->>'body' IS NULL) "
                      "FROM notifier.queue WHERE channel = %s AND payload->'key'->>'phase' = %s",
                  (channel, phase))[0]
        n, ids, keys, odd = stats
        missing = q(DB, f"SELECT count(*), min(n), max(n) FROM {table} i WHERE phase = %s AND NOT EXISTS "
                        "(SELECT 1 FROM notifier.queue x WHERE x.channel = %s "
                        " AND x.payload->'key'->>'phase' = %s AND (x.payload->'key'->>'n')::bigint = i.n)",
                    (phase, channel, phase))[0]
        invented = q(DB, "SELECT count(*), min(payload->>'id') FROM notifier.queue x WHERE channel = %s "
                         "AND payload->'key'->>'phase' = %s AND NOT EXISTS (SELECT 1 FROM "
                         f"{table} i WHERE i.phase = %s AND i.n = (x.payload->'key'->>'n')::bigint)",
                     (channel, phase, phase))[0]
        disorder = q(DB, "SELECT count(*) FROM (SELECT split_part(payload->>'id', '.', 2)::int AS k, "
                         "lag(split_part(payload->>'id', '.', 2)::int) OVER "
                         "(PARTITION BY payload->>'xid' ORDER BY id) AS prev FROM notifier.queue "
                         "WHERE channel = %s AND payload->'key'->>'phase' = %s) s WHERE k <= prev",
                     (channel, phase))[0][0]
        left = q(DB, "SELECT count(*) FROM notifier.outbox WHERE channel = %s", (channel,))[0][0]
        problems = []
        if missing[0]:
            problems.append(f"{missing[0]} committed events never reached the queue "
                            f"(n {missing[1]}..{missing[2]})")
        if invented[0]:
            problems.append(f"{invented[0]} events of rows that were never committed "
                            f"(e.g. id {invented[1]})")
        if n != keys or n != ids:
            problems.append(f"duplicates: {n} queue rows, {keys} distinct keys, {ids} distinct "
                            f"event ids")
        if odd:
            problems.append(f"{odd} events that are not an INSERT with its transaction's xid and "
                            f"the row")
        if disorder:
            problems.append(f"{disorder} events out of order within their transaction")
        if left:
            problems.append(f"{left} events left in notifier.outbox")
        if problems:
            raise TestFailure(f"phase {phase}: " + "; ".join(problems))
        log(f"   notifier.queue: {n} events = the {rows} committed rows, each exactly once "
            f"(distinct keys and event ids), xids match, in order within each transaction; "
            f"outbox empty")

    def wait_queue(self, phase, channel, rows, timeout):
        def fn():
            k = self.cl.q(DB, "SELECT count(*) FROM notifier.queue WHERE channel = %s "
                              "AND payload->'key'->>'phase' = %s", (channel, phase))[0][0]
            return k >= rows, k
        return poll(f"{rows} events of phase {phase} in notifier.queue", timeout, fn, interval=0.25)

    # -- 1. kill -9 loop ----------------------------------------------------------
    def phase_kill(self):
        phase, n = "kill9", self.KILL_EVENTS
        log(f"1. kill -9 of the worker in a loop while 4 producers commit {n} events")
        prod = Producers(self.cl, "items", phase, n, 4, 1, self.TXN_ROWS)
        t0 = time.monotonic()
        prod.start()
        kills = 0
        pid = self.wait_worker(30)[1]
        backs = []
        busy = []          # at each kill: (events in the outbox, the worker moving them)
        while True:
            time.sleep(random.uniform(0.15, 0.35))
            if not prod.alive():
                break
            try:
                busy.append(tuple(self.cl.q(DB, "SELECT (SELECT count(*) FROM notifier.outbox), "
                                                "(SELECT query = 'moving outbox events' AND state = 'active' "
                                                " FROM pg_stat_activity WHERE pid = %s)", (pid,))[0]))
            except psycopg.OperationalError:
                pass
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
            kills += 1
            self.cl.drop_all()
            tk = time.monotonic()
            pid = self.wait_worker(60, not_pid=pid)[1]
            backs.append(time.monotonic() - tk)
        prod.join(120)
        t_prod = time.monotonic() - t0
        log(f"   {kills} kill -9s during {t_prod:.1f} s of producing ({prod.ok_rows} rows with an "
            f"answered COMMIT); worker back after {min(backs or [0]):.2f}..{max(backs or [0]):.2f} s; "
            f"at the kills: events in the outbox {[b[0] for b in busy]}, worker moving them "
            f"{sum(1 for b in busy if b[1])} times")
        rows = self.check_attempts(prod, "items")
        secs, _ = self.wait_queue(phase, "ob_q", rows, 120)
        self.timing(f"kill9: all {rows} events in the queue after the producers finished", secs)
        self.check_queue(phase, "items", "ob_q", rows)
        self.result(f"kill -9 x{kills}: {rows} events exactly once")
        if kills < 3:
            raise TestFailure(f"only {kills} kills: the loop did not hit the worker enough")

    # -- 2. restart -m immediate -----------------------------------------------------
    def phase_restart(self):
        phase, n = "immediate", RESTART_EVENTS
        log(f"2. pg_ctl restart -m immediate x3 while 4 producers commit {n} events")
        prod = Producers(self.cl, "items", phase, n, 4, 2, self.TXN_ROWS)
        prod.start()
        done = 0
        for frac in (0.25, 0.5, 0.75):
            poll(f"{frac:.0%} of phase {phase} committed", 60,
                 lambda: (prod.ok_rows >= frac * n or not prod.alive(), prod.ok_rows), interval=0.02)
            if not prod.alive():
                break
            before = self.worker_pid()
            took = self.cl.restart("immediate")
            done += 1
            secs, w = self.wait_worker(60, not_pid=before)
            log(f"   restart -m immediate at {prod.ok_rows} committed rows took {took:.2f} s; "
                f"worker {before} -> {w}")
        prod.join(120)
        if done < 3:
            raise TestFailure(f"phase {phase}: the producers finished after {done} restarts")
        rows = self.check_attempts(prod, "items")
        secs, _ = self.wait_queue(phase, "ob_q", rows, 120)
        self.timing(f"immediate: all {rows} events in the queue after the producers finished", secs)
        self.check_queue(phase, "items", "ob_q", rows)
        self.result(f"restart -m immediate x{done}: {rows} events exactly once")

    # -- 3. webhook receiver down -------------------------------------------------------
    def phase_down(self):
        phase, n = "down", DOWN_EVENTS
        cl, rcv, rid = self.cl, self.rcv, self.rid
        log(f"3. webhook receiver stopped while 2 producers commit {n} events, then back")
        prod = Producers(cl, "items_w", phase, n, 2, 3, self.TXN_ROWS)
        prod.start()
        poll("a third of the events delivered", 60,
             lambda: (lambda k: (k >= n // 3, k))(sum(1 for r in rcv.requests() for e in (r.evs or ())
                                                      if e[0] == phase)), interval=0.02)
        rcv.stop()
        t_down = time.monotonic()
        log(f"   receiver stopped after {len(rcv.requests())} requests")
        prod.join(120)
        time.sleep(1.5)
        st = dict(cl.q(DB, "SELECT status, count(*) FROM notifier.deliveries WHERE route_id = %s "
                           "GROUP BY 1", (rid,)))
        retried = cl.one(DB, "SELECT count(*) FROM notifier.deliveries WHERE route_id = %s "
                             "AND status <> 'delivered' AND attempts > 1", (rid,))
        log(f"   receiver down {time.monotonic() - t_down:.1f} s: deliveries {st}, "
            f"{retried} not delivered after more than one attempt")
        if not st.get("pending") and not st.get("in_flight"):
            raise TestFailure(f"phase {phase}: nothing waiting while the receiver was down: {st}")
        rows = self.check_attempts(prod, "items_w")
        rcv.start()
        t_up = time.monotonic()
        poll(f"all {rows} events delivered", 90,
             lambda: (lambda d: (d.get("delivered", 0) >= rows or d.get("dead"), d))(dict(cl.q(
                 DB, "SELECT status, count(*) FROM notifier.deliveries WHERE route_id = %s GROUP BY 1",
                 (rid,)))), interval=0.1)
        self.timing(f"down: all {rows} events delivered after the receiver came back", time.monotonic() - t_up)
        # notifier.deliveries: each committed event exactly once, delivered
        d = cl.q(DB, "SELECT count(*), count(DISTINCT payload->>'id'), "
                     "count(DISTINCT (payload->'key'->>'n')::bigint), "
                     "count(*) FILTER (WHERE status <> 'delivered') FROM notifier.deliveries "
                     "WHERE route_id = %s", (rid,))[0]
        if d != (rows, rows, rows, 0):
            raise TestFailure(f"phase {phase}: notifier.deliveries has {d[0]} rows, {d[1]} distinct "
                              f"event ids, {d[2]} distinct keys, {d[3]} not delivered; expected "
                              f"{rows} committed events, each once, all delivered")
        left = cl.one(DB, "SELECT count(*) FROM notifier.outbox")
        if left:
            raise TestFailure(f"phase {phase}: {left} events left in notifier.outbox")
        committed = {k for (k,) in cl.q(DB, "SELECT n FROM items_w WHERE phase = %s", (phase,))}
        self.check_receipts(phase, committed)

    def check_receipts(self, phase, committed):
        """At the receiver: every committed event at least once, nothing else;
        a duplicate only of a request in flight when the receiver stopped."""
        reqs = [r for r in self.rcv.requests() if r.evs and any(e[0] == phase for e in r.evs)]
        occ = collections.defaultdict(list)       # n -> requests
        wids = collections.Counter(r.wid for r in reqs)
        bad_wid = []
        for r in reqs:
            if r.wid != r.evs[0][2]:
                bad_wid.append(f"webhook-id {r.wid!r}, first event {r.evs[0][2]!r}")
            for ph, n, _ in r.evs:
                occ[n].append(r)
        missing = sorted(committed - set(occ))
        invented = sorted(set(occ) - committed)
        dup = {n: rs for n, rs in occ.items() if len(rs) > 1}
        extra = sum(len(rs) - 1 for rs in dup.values())
        unexplained = [n for n, rs in dup.items()
                       if any(r.answered and wids[r.wid] < 2 for r in sorted(rs, key=lambda r: r.seq)[:-1])]
        limit = WH_CONCURRENCY * WH_BATCH
        problems = []
        if bad_wid:
            problems.append(f"{len(bad_wid)} requests whose webhook-id is not their first event's "
                            f"id: {bad_wid[:3]}")
        if missing:
            problems.append(f"{len(missing)} committed events never reached the receiver: {missing[:5]}")
        if invented:
            problems.append(f"{len(invented)} events of rows never committed: {invented[:5]}")
        if unexplained:
            problems.append(f"{len(unexplained)} events received again although the earlier request "
                            f"was answered and its webhook-id not repeated: {unexplained[:5]}")
        if extra > limit:
            problems.append(f"{extra} duplicate deliveries, more than concurrency x batch_size = {limit}")
        if problems:
            raise TestFailure(f"phase {phase}: " + "; ".join(problems))
        unanswered = sum(1 for r in reqs if not r.answered)
        log(f"   receiver: {len(reqs)} requests ({unanswered} cut before their answer), all "
            f"{len(committed)} events, {extra} duplicate deliveries (limit {limit}), "
            f"repeated webhook-ids: {sum(1 for c in wids.values() if c > 1)}")
        self.result(f"receiver down: {len(committed)} events, {extra} duplicates")

    # =================================================================================
    def setup(self):
        cl, rcv = self.cl, self.rcv
        cl.q("postgres", f"CREATE DATABASE {DB}")
        cl.q(DB, "CREATE EXTENSION pg_notifier")
        cols = ("phase text, n bigint, p int, t int, j int, x xid8 DEFAULT pg_current_xact_id(), "
                "body text, PRIMARY KEY (phase, n)")
        cl.q(DB, f"CREATE TABLE items ({cols}); CREATE TABLE items_w ({cols})")
        cl.q(DB, f"SELECT notifier.watch('items', channel => 'ob_q'{self.WATCH})")
        cl.q(DB, f"SELECT notifier.watch('items_w', channel => 'ob_wh'{self.WATCH})")
        cl.q(DB, "SELECT notifier.add_queue('ob_q')")
        self.rid = cl.one(DB, "SELECT notifier.add_webhook('ob_wh', %s, batch_size => %s, concurrency => %s, "
                         "max_attempts => 100)", (rcv.url("/hook"), WH_BATCH, WH_CONCURRENCY))
        secs, pid = self.wait_worker(30)
        log(f"cluster on 127.0.0.1:{cl.port}, worker {pid} up {secs:.2f} s after CREATE EXTENSION; "
            f"receiver on 127.0.0.1:{rcv.port}")


STEPS = [
    Step("kill9", "kill -9 of the worker in a loop while producers commit", Test.phase_kill),
    Step("immediate", "pg_ctl restart -m immediate x3 while producers commit", Test.phase_restart),
    Step("down", "webhook receiver down while producers commit, then back", Test.phase_down),
]


if __name__ == "__main__":
    Test().run(STEPS)
