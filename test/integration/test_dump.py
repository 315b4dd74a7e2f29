#!/usr/bin/python3
"""pg_dump / pg_restore of a database that uses pg_notifier, on a cluster of
its own (it changes pg_notifier.databases and reloads the server).

The extension's tables that hold users' state are extension configuration
tables (pg_extension_config_dump): a dump carries the routes (with their
secrets: the dump is a superuser's), the events waiting in the outbox, the
deliveries not yet delivered, the queued events and the stored oversize
events, and the sequences behind their ids; delivered rows stay out.

  fill     dump_src: a watch with a queue route, a custom queue table, a
           webhook route to a receiver that is down (its deliveries stay
           pending) and one to a live receiver (delivered), events waiting
           for a route, an oversize event stored in notifier.payloads; then
           dump_src's worker is stopped so that nothing moves during the dump.
  custom   pg_dump -Fc, pg_restore into dump_dst (its worker running): every
           row of state equal to dump_src's, no delivered row; the receiver
           comes up and the restored route delivers every pending event; a
           new route and new events get ids that do not collide.
  plain    pg_dump -Fp | psql into dump_plain while it has no worker, then
           its worker is started: the same state, and it delivers too.

Run it as root with Debian's python3:
    /usr/bin/python3 test/integration/test_dump.py [STEP...]
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, free_port, log  # noqa: E402
from owncluster import ClusterTest, poll  # noqa: E402
import recorder  # noqa: E402
from psycopg import sql  # noqa: E402

NAME = "test_dump"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
N = 40                  # events per phase
SECRET = "whsec_ZHVtcC1hbmQtcmVzdG9yZS1zZWNyZXQ="

# each query returns a comparable, ordered list of rows
STATE = {
    "routes": "SELECT id, channel, kind, coalesce(queue_table::text, url), headers::text, secret, "
              "batch_size, max_attempts, ordered, filter::text, transform, owner::text"
              " FROM notifier.routes ORDER BY id",
    "outbox": "SELECT id, channel, event::text, notify FROM notifier.outbox ORDER BY id",
    "deliveries": "SELECT id, route_id, event_id, payload::text FROM notifier.deliveries "
                  "WHERE status <> 'delivered' ORDER BY id",
    "queue": "SELECT id, channel, payload::text FROM notifier.queue ORDER BY id",
    "app_q": "SELECT id, channel, payload::text FROM app_q ORDER BY id",
    "payloads": "SELECT id, event::text FROM notifier.payloads ORDER BY id",
    "watches": "SELECT \"table\"::text, channel, delivery FROM notifier.watches ORDER BY 1, 2",
}


class Test(ClusterTest):
    def __init__(self):
        self.down_port = free_port()
        super().__init__(NAME, "pg_notifier.databases = 'dump_src'\n"
                         "pg_notifier.retry_base_ms = 50\npg_notifier.retry_max_ms = 200",
                         TIMEOUT, rcv=recorder.Receiver("live"))
        self.down = recorder.Receiver("restored", port=self.down_port)
        self.src_state = None

    def expect(self, cond, ok, bad):
        """A check that says what it saw either way."""
        if self.check(cond, bad):
            log(ok)

    def set_databases(self, dbs):
        self.cl.q("postgres", sql.SQL("ALTER SYSTEM SET pg_notifier.databases = {}")
                  .format(sql.Literal(dbs)))
        self.cl.q("postgres", "SELECT pg_reload_conf()")

    def state(self, db):
        return {k: self.cl.q(db, q) for k, q in STATE.items()}

    def worker_pid(self, db):
        rows = self.cl.q("postgres", "SELECT pid FROM pg_stat_activity "
                                     "WHERE backend_type = 'pg_notifier worker' AND datname = %s",
                         (db,))
        return rows[0][0] if rows else None

    # -- steps -------------------------------------------------------------
    def step_fill(self):
        db = "dump_src"
        self.cl.q("postgres", "CREATE DATABASE dump_src")
        self.cl.q("postgres", "SELECT pg_reload_conf()")     # the launcher looks again
        self.cl.q(db, "CREATE EXTENSION pg_notifier")
        self.cl.q(db, "CREATE TABLE orders (id int PRIMARY KEY, v text)")
        self.cl.q(db, "CREATE TABLE app_q (id bigserial PRIMARY KEY, channel text NOT NULL, "
                      "payload jsonb NOT NULL)")
        self.cl.q(db, "SELECT notifier.watch('orders', channel => 'o', delivery => 'outbox')")
        self.cl.q(db, "SELECT notifier.watch('orders', channel => 'o_wait', delivery => 'outbox')")
        self.cl.q(db, "SELECT notifier.watch('orders', channel => 'o_big')")
        self.cl.q(db, "SELECT notifier.add_queue('o')")
        # a filter every event passes, a transform that changes none (no nulls):
        # the route's filter, transform and owner come back with the dump
        self.cl.q(db, "SELECT notifier.add_queue('o', 'app_q', filter => '$.op != \"NONE\"',"
                      " transform => 'pg_catalog.jsonb_strip_nulls(jsonb)')")
        self.cl.q(db, "SELECT notifier.add_webhook('o', %s, secret => %s, "
                      "headers => '{\"Authorization\": \"Bearer dump\"}')",
                  (f"http://127.0.0.1:{self.down_port}/hook", SECRET))
        self.cl.q(db, "SELECT notifier.add_webhook('o', %s)", (self.rcv.url("/live"),))
        self.cl.q(db, "SELECT notifier.add_queue('o_big')")
        poll("dump_src's worker listening", 30,
             lambda: (self.worker_pid(db) is not None, None))
        self.cl.q(db, "INSERT INTO orders SELECT g, 'v' || g FROM generate_series(1, %s) g", (N,))
        self.cl.q(db, "SET pg_notifier.max_payload_bytes = 1024")
        self.cl.q(db, "UPDATE orders SET v = repeat('x', 3000) WHERE id = 1")
        self.cl.q(db, "RESET pg_notifier.max_payload_bytes")

        def moved():
            n = self.cl.q(db, "SELECT (SELECT count(*) FROM notifier.queue WHERE channel = 'o'), "
                              "(SELECT count(*) FROM app_q), "
                              "(SELECT count(*) FROM notifier.deliveries d JOIN notifier.routes r "
                              "   ON r.id = d.route_id WHERE r.url LIKE '%%/live' "
                              "   AND d.status = 'delivered'), "
                              "(SELECT count(*) FROM notifier.deliveries d JOIN notifier.routes r "
                              "   ON r.id = d.route_id WHERE r.url LIKE '%%/hook'), "
                              "(SELECT count(*) FROM notifier.payloads), "
                              "(SELECT count(*) FROM notifier.queue WHERE channel = 'o_big')")[0]
            want = N + 1
            return n[:4] == (want, want, want, want) and n[4] >= 1 and n[5] >= 1, n
        poll("events of dump_src at their routes", 60, moved)
        waiting = self.cl.one(db, "SELECT count(*) FROM notifier.outbox WHERE channel = 'o_wait'")
        if waiting != N + 1:
            raise TestFailure(f"{waiting} events of o_wait wait in the outbox, expected {N + 1}")

        # freeze dump_src: no worker, so that nothing moves during the dump
        self.set_databases("dump_dst")
        poll("dump_src's worker gone", 30, lambda: (self.worker_pid(db) is None, None))
        self.src_state = self.state(db)
        s = self.src_state
        log(f"dump_src: {len(s['routes'])} routes, {len(s['outbox'])} outbox events, "
            f"{len(s['deliveries'])} undelivered deliveries, {len(s['queue'])} queued, "
            f"{len(s['app_q'])} in app_q, {len(s['payloads'])} stored payloads")
        self.expect(len(s["deliveries"]) == N + 1, "only the pending route's deliveries are "
                    "undelivered", f"{len(s['deliveries'])} undelivered deliveries, "
                    f"expected {N + 1}")

    def compare(self, db):
        got = self.state(db)
        for k, rows in self.src_state.items():
            self.expect(got[k] == rows, f"{db}: {k} equal to dump_src's ({len(rows)} rows)",
                       f"{db}: {k}: {len(got[k])} rows, dump_src {len(rows)}; "
                       f"first difference: {next((p for p in zip(got[k], rows) if p[0] != p[1]), None)}")
        delivered = self.cl.one(db, "SELECT count(*) FROM notifier.deliveries "
                                    "WHERE status = 'delivered'")
        self.expect(delivered == 0, f"{db}: no delivered row restored",
                   f"{db}: {delivered} delivered rows restored")

    def delivers(self, db, copies):
        """The restored route delivers every pending event (copies: how many
        restored databases have sent each by now)."""
        want = {r[2] for r in self.src_state["deliveries"]}

        def fn():
            got = {}
            for r in self.down.requests("/hook"):
                if r.status == 200:
                    got[r.wid] = got.get(r.wid, 0) + 1
            n = sum(1 for w in want if got.get(w, 0) >= copies)
            return n == len(want), f"{n} of {len(want)}"
        secs, _ = poll(f"{db}: the restored webhook route delivers", 60, fn)
        sigs = all(r.sig == recorder.expected_signature(SECRET, r.wid, r.ts, r.body)
                   for r in self.down.requests("/hook") if r.status == 200)
        self.expect(sigs, f"{db}: {len(want)} pending events delivered after {secs:.1f}s, "
                   "signed with the restored secret", f"{db}: a request with a bad signature")

    def new_work(self, db):
        rid = self.cl.one(db, "SELECT notifier.add_queue('o_new')")
        self.expect(rid > max(r[0] for r in self.src_state["routes"]),
                   f"{db}: a new route gets a new id ({rid})", f"{db}: route id {rid} reused")
        self.cl.q(db, "INSERT INTO orders VALUES (%s, 'after restore')", (N + 100,))
        poll(f"{db}: a new event queued", 30, lambda: (self.cl.one(
            db, "SELECT count(*) FROM notifier.queue WHERE channel = 'o' "
                "AND payload->'key'->>'id' = %s", (str(N + 100),)) == 1, None))
        top = max(r[0] for r in self.src_state["queue"])
        newest = self.cl.one(db, "SELECT max(id) FROM notifier.queue")
        self.expect(newest > top, f"{db}: queue ids go on after the restored ones ({newest})",
                   f"{db}: queue id {newest} not after {top}")

    def step_custom(self):
        path = os.path.join(self.cl.dir, "dump_src.custom")
        self.pg(["pg_dump", "-Fc", "-f", path, "dump_src"])
        self.cl.q("postgres", "CREATE DATABASE dump_dst")
        self.cl.q("postgres", "SELECT pg_reload_conf()")
        self.pg(["pg_restore", "-d", "dump_dst", path])
        poll("dump_dst's worker", 30, lambda: (self.worker_pid("dump_dst") is not None, None))
        self.compare("dump_dst")
        self.down.start()
        self.delivers("dump_dst", 1)
        self.new_work("dump_dst")

    def step_plain(self):
        path = os.path.join(self.cl.dir, "dump_src.sql")
        self.pg(["pg_dump", "-Fp", "-f", path, "dump_src"])
        self.cl.q("postgres", "CREATE DATABASE dump_plain")
        # no worker runs in dump_plain while it is restored
        self.pg(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "dump_plain", "-f", path])
        self.expect(self.worker_pid("dump_plain") is None, "dump_plain restored with no worker",
                   "a worker ran in dump_plain during the restore")
        self.compare("dump_plain")
        self.set_databases("dump_dst, dump_plain")
        poll("dump_plain's worker", 30, lambda: (self.worker_pid("dump_plain") is not None, None))
        self.delivers("dump_plain", 2)
        self.new_work("dump_plain")

    def pg(self, args):
        cmd = [os.path.join(self.cl.bin, args[0])] + args[1:] + \
            ["-h", self.cl.dir, "-p", str(self.cl.port), "-U", "postgres"]
        rc, out = self.cl.run_pg(cmd, timeout=120)
        if rc != 0:
            raise TestFailure(f"{' '.join(args[:2])} failed (exit {rc}):\n{out}")
        log(f"{' '.join(args[:2])}: ok")

    def stop(self):
        try:
            self.down.stop()
        except Exception:       # noqa: BLE001 -- the cluster goes anyway
            pass
        return super().stop()


STEPS = [
    Step("fill", "a database with every kind of state, frozen", Test.step_fill, needed=True),
    Step("custom", "pg_dump -Fc, pg_restore into a database with a worker", Test.step_custom),
    Step("plain", "pg_dump -Fp, psql into a database without a worker, then started",
         Test.step_plain),
]


if __name__ == "__main__":
    Test().run(STEPS)
