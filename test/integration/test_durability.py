#!/usr/bin/python3
"""Nothing lost by default: a DEFAULT watch (no delivery option: 'auto') with a
queue route and a webhook route, on a cluster of its own with the default
settings (no pg_notifier.databases line: '*').

In every phase every committed event reaches every route (by key and event
id), none of a transaction that did not commit:

  kill9      kill -9 of the worker in a loop while 4 producers commit
             single-row transactions (queue route: each event exactly once);
  immediate  pg_ctl restart -m immediate x3 during writes;
  down       the webhook receiver down during writes, then back (at least
             once, duplicates only of requests in flight);
             (these three are test_outbox_crash.py's phases, run here with
             the default watch: see that file)
  newdb      a database created after the server started, with no
             pg_notifier.databases line: CREATE EXTENSION, watch, add_queue,
             add_webhook, and 1,000 rows written right after;
  churn      DROP / CREATE EXTENSION five times, each followed at once by a
             new watch and routes and writes;
  readonly   default_transaction_read_only = on for the whole server
             (applications turn it off per session).

Run it as root with Debian's python3:
    /usr/bin/python3 test/integration/test_durability.py [STEP...]
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from itlib import Step, TestFailure, log  # noqa: E402
from owncluster import poll  # noqa: E402
import test_outbox_crash as crash  # noqa: E402

ROWS = 1000


def body_events(body):
    """The events of a webhook request's body: one, or a JSON array."""
    b = json.loads(body)
    return b if isinstance(b, list) else [b]


class Test(crash.Test):
    NAME = "test_durability"
    WATCH = ""              # the default: delivery => 'auto'
    SETTINGS = ""           # the default: pg_notifier.databases = '*'
    TXN_ROWS = 1            # single-row transactions
    KILL_EVENTS = 50_000    # single-row transactions are slower: kills enough

    def worker_of(self, db):
        rows = self.cl.q("postgres", "SELECT pid FROM pg_stat_activity "
                                     "WHERE backend_type = %s AND datname = %s", (crash.WORKER, db))
        return rows[0][0] if rows else None

    def routed_database(self, db, tag):
        """A default watch on table t (channel tag), a queue route and a
        webhook route; ROWS rows written right after: every event reaches
        both, once in the queue, at least once at the receiver."""
        cl = self.cl
        cl.q(db, "CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, tag text)")
        cl.q(db, "SELECT notifier.watch('t', channel => %s)", (tag,))
        cl.q(db, "SELECT notifier.add_webhook(%s, %s, batch_size => 50)",
             (tag, self.rcv.url(f"/{db}/{tag}")))
        cl.q(db, "SELECT notifier.add_queue(%s)", (tag,))
        cl.q(db, "INSERT INTO t (tag) SELECT %s FROM generate_series(1, %s)", (tag, ROWS))
        want = {str(r[0]) for r in cl.q(db, "SELECT id FROM t WHERE tag = %s", (tag,))}

        def queued():
            got = cl.q(db, "SELECT count(*), count(DISTINCT payload->'key'->>'id') "
                           "FROM notifier.queue WHERE channel = %s", (tag,))[0]
            return got[1] >= ROWS, got
        secs, got = poll(f"{db}/{tag}: {ROWS} events in the queue", 60, queued, interval=0.02)
        if got != (ROWS, ROWS):
            raise TestFailure(f"{db}/{tag}: {got[0]} queue rows, {got[1]} distinct keys; "
                              f"expected {ROWS} once each")

        def received():
            keys = {str(e["key"]["id"]) for r in self.rcv.requests(f"/{db}/{tag}")
                    if r.status == 200 for e in body_events(r.body)}
            return want <= keys, len(keys & want)
        secs2, n = poll(f"{db}/{tag}: {ROWS} events at the receiver", 60, received, interval=0.05)
        left = cl.one(db, "SELECT count(*) FROM notifier.outbox WHERE channel = %s", (tag,))
        if left:
            raise TestFailure(f"{db}/{tag}: {left} events left in the outbox")
        log(f"   {db}/{tag}: {ROWS} rows written right after the routes: all in the queue once "
            f"({secs:.2f} s), all at the receiver ({secs2:.2f} s), outbox empty")

    def phase_newdb(self):
        self.cl.q("postgres", "CREATE DATABASE newdb")
        self.cl.q("newdb", "CREATE EXTENSION pg_notifier")
        secs, _ = poll("a worker in newdb", 30, lambda: (self.worker_of("newdb") is not None, None),
                       interval=0.005)
        self.timing("newdb: CREATE EXTENSION -> worker", secs)
        self.routed_database("newdb", "nd")

    def phase_churn(self):
        for i in range(5):
            self.cl.q("newdb", "DROP EXTENSION pg_notifier CASCADE")
            self.cl.q("newdb", "DROP TABLE t")
            self.cl.q("newdb", "CREATE EXTENSION pg_notifier")
            self.routed_database("newdb", f"churn{i}")

    def phase_readonly(self):
        cl = self.cl
        cl.q("postgres", "ALTER SYSTEM SET default_transaction_read_only = on")
        cl.q("postgres", "SELECT pg_reload_conf()")
        try:
            cl.drop_all()
            cl.q("newdb", "SET default_transaction_read_only = off")
            pid = self.worker_of("newdb")
            self.routed_database("newdb", "ro")
            if self.worker_of("newdb") != pid:
                raise TestFailure(f"the worker of newdb restarted: {pid} -> {self.worker_of('newdb')}")
            log(f"   the worker ({pid}) kept running")
        finally:
            cl.drop_all()
            cl.q("postgres", "SET default_transaction_read_only = off")
            cl.q("postgres", "ALTER SYSTEM RESET default_transaction_read_only")
            cl.q("postgres", "SELECT pg_reload_conf()")


STEPS = [
    Step("kill9", "kill -9 of the worker in a loop during single-row writes", Test.phase_kill),
    Step("immediate", "pg_ctl restart -m immediate x3 during writes", Test.phase_restart),
    Step("down", "webhook receiver down during writes, then back", Test.phase_down),
    Step("newdb", "a database created after the start, routes and writes at once",
         Test.phase_newdb, needed=True),
    Step("churn", "DROP / CREATE EXTENSION with writes right after", Test.phase_churn,
         needs=("newdb",)),
    Step("readonly", "default_transaction_read_only = on server-wide", Test.phase_readonly,
         needs=("newdb",)),
]


if __name__ == "__main__":
    Test().run(STEPS)
