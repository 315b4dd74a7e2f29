#!/usr/bin/python3
"""A worker in every database that has the extension (pg_notifier.databases
= '*', the default), on a cluster of its own with no pg_notifier.databases
line at all.

  probe     after the server starts, no worker stays in a database without
            the extension (the launcher's probes exit at once).
  create    CREATE DATABASE app after the start, CREATE EXTENSION in it: its
            worker runs (the time it took is printed); a watch, a queue route
            and 1,000 rows written right after add_queue all reach the queue.
  churn     DROP EXTENSION: the worker is gone (time printed); CREATE
            EXTENSION: back; five rounds, each with a new watch and route and
            writes right after: every event arrives, none twice.
  restart   a worker terminated is back at once with a new pid; terminated
            again and again right after its start, it is still started again
            (with a growing backoff).
  warning   with pg_notifier.databases = 'postgres', add_queue() in app warns
            that no worker serves it; back to '*', app has its worker again.

Run it as root with Debian's python3:
    /usr/bin/python3 test/integration/test_every_database.py [STEP...]
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, log  # noqa: E402
from owncluster import ClusterTest, poll  # noqa: E402
from psycopg import sql  # noqa: E402

NAME = "test_every_database"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
ROWS = 1000


class Test(ClusterTest):
    def __init__(self):
        super().__init__(NAME, "", TIMEOUT)
        self.round = 0

    def expect(self, cond, ok, bad):
        if self.check(cond, bad):
            log(ok)

    def workers(self):
        """database -> pid of its pg_notifier worker"""
        return {r[1]: r[0] for r in self.cl.q(
            "postgres", "SELECT pid, datname::text FROM pg_stat_activity "
                        "WHERE backend_type = 'pg_notifier worker'")}

    def wait_worker(self, db, present, not_pid=None, timeout=30):
        def fn():
            pid = self.workers().get(db)
            ok = (pid is not None and pid != not_pid) if present else pid is None
            return ok, pid
        secs, pid = poll(f"worker of {db} {'running' if present else 'gone'}", timeout, fn,
                         interval=0.005)
        return secs, pid

    def write_and_check(self, db, tag):
        """A watch and a queue route on a new channel, rows written right after
        add_queue: every event reaches the queue, once."""
        ch = f"ch_{tag}"
        self.cl.q(db, "CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, tag text)")
        self.cl.q(db, "SELECT notifier.watch('items', channel => %s, delivery => 'outbox')", (ch,))
        self.cl.q(db, "SELECT notifier.add_queue(%s)", (ch,))
        self.cl.q(db, "INSERT INTO items (tag) SELECT %s FROM generate_series(1, %s)", (tag, ROWS))

        def fn():
            n = self.cl.q(db, "SELECT count(*), count(DISTINCT payload->>'id') FROM notifier.queue "
                              "WHERE channel = %s", (ch,))[0]
            return n[0] >= ROWS, n
        secs, n = poll(f"{ROWS} events of {ch} in the queue of {db}", 60, fn)
        self.expect(n == (ROWS, ROWS), f"{db}: {ROWS} events of {ch} in the queue after {secs:.2f}s",
                    f"{db}: {n[0]} events of {ch} in the queue, {n[1]} distinct, expected {ROWS}")

    def step_probe(self):
        secs, _ = poll("no worker in a database without the extension", 30,
                       lambda: (self.workers() == {}, self.workers()), interval=0.01)
        self.timing("probes gone after the start", secs)
        self.expect(True, "no worker stays in postgres, template databases are not probed", "")

    def step_create(self):
        self.cl.q("postgres", "CREATE DATABASE app")
        self.cl.q("app", "SELECT 1")
        time.sleep(0)       # nothing to wait for: no worker may come yet
        self.expect("app" not in self.workers(), "app without the extension: no worker",
                    "a worker runs in app before CREATE EXTENSION")
        self.cl.q("app", "CREATE EXTENSION pg_notifier")
        secs, pid = self.wait_worker("app", True)
        self.timing("CREATE EXTENSION -> worker running", secs)
        self.write_and_check("app", "create")

    def step_churn(self):
        for i in range(5):
            pid = self.workers().get("app")
            self.cl.q("app", "DROP EXTENSION pg_notifier CASCADE")
            secs, _ = self.wait_worker("app", False)
            self.timing(f"round {i}: DROP EXTENSION -> worker gone", secs)
            self.cl.q("app", "CREATE EXTENSION pg_notifier")
            secs, new = self.wait_worker("app", True, not_pid=pid)
            self.timing(f"round {i}: CREATE EXTENSION -> worker running", secs)
            self.write_and_check("app", f"churn{i}")

    def step_restart(self):
        pid = self.workers()["app"]
        self.cl.q("postgres", "SELECT pg_terminate_backend(%s)", (pid,))
        secs, new = self.wait_worker("app", True, not_pid=pid)
        self.timing("terminated -> started again", secs)
        for i in range(3):
            self.cl.q("postgres", "SELECT pg_terminate_backend(%s)", (new,))
            secs, newer = self.wait_worker("app", True, not_pid=new, timeout=60)
            self.timing(f"terminated again right after its start ({i + 1}) -> started again",
                        secs)
            new = newer
        self.write_and_check("app", "restart")

    def step_warning(self):
        self.set_databases("postgres")
        self.wait_worker("app", False)
        conn = self.cl.connect("app")
        seen = []
        conn.add_notice_handler(lambda d: seen.append((d.severity_nonlocalized, d.message_primary,
                                                        d.message_detail)))
        conn.execute("SELECT notifier.add_queue('ch_unserved')")
        conn.close()
        warned = [s for s in seen if s[0] == "WARNING" and "no pg_notifier worker" in s[1]]
        self.expect(len(warned) == 1 and "not in pg_notifier.databases" in (warned[0][2] or ""),
                    f"add_queue() without a worker warns: {warned[0][1] if warned else None}",
                    f"add_queue() without a worker: notices {seen}")
        self.set_databases("*")
        secs, _ = self.wait_worker("app", True)
        self.timing("pg_notifier.databases = '*' again -> app's worker", secs)
        self.write_and_check("app", "back")

    def set_databases(self, value):
        self.cl.q("postgres", sql.SQL("ALTER SYSTEM SET pg_notifier.databases = {}")
                  .format(sql.Literal(value)))
        self.cl.q("postgres", "SELECT pg_reload_conf()")


STEPS = [
    Step("probe", "no worker in a database without the extension", Test.step_probe, needed=True),
    Step("create", "a database created after the start gets its worker at CREATE EXTENSION",
         Test.step_create, needed=True),
    Step("churn", "DROP / CREATE EXTENSION, writes right after", Test.step_churn),
    Step("restart", "a terminated worker comes back at once", Test.step_restart),
    Step("warning", "a route where no worker runs warns", Test.step_warning),
]


if __name__ == "__main__":
    Test().run(STEPS)
