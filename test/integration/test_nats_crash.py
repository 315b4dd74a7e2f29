#!/usr/bin/python3
"""The NATS sink across a crash of PostgreSQL: `pg_ctl restart -m immediate`
while a burst of events is being published to an R1 JetStream stream.
Nothing is lost, and nothing is in the stream twice: what was in flight at
the crash is published again under the same Nats-Msg-Id, which JetStream
drops within its duplicate window.

A cluster of its own (test/lib/owncluster.py: the restart would disturb
test/run's), a nats-server of its own on 127.0.0.1 (test/lib/natsserver.py).

Run it as root with Debian's python3:
    /usr/bin/python3 test/integration/test_nats_crash.py
Environment: as test_webhook_crash.py; PG_NOTIFIER_CRASH_EVENTS (events
before and after the restart, 10000 each).
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, log  # noqa: E402
from natsserver import NatsAdmin, NatsServer, ensure_node_nats  # noqa: E402
from owncluster import ClusterTest, poll  # noqa: E402

NAME = "test_nats_crash"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "300"))
EVENTS = int(os.environ.get("PG_NOTIFIER_CRASH_EVENTS", "10000"))
DB = "nc"


class Test(ClusterTest):
    def __init__(self):
        super().__init__(NAME, f"pg_notifier.databases = 'postgres, {DB}'\n"
                         "pg_notifier.retry_base_ms = 50\npg_notifier.retry_max_ms = 500",
                         TIMEOUT)
        self.nats = None
        self.route = None

    def setup(self):
        ensure_node_nats()
        self.nats = NatsServer().start()
        self.adm = NatsAdmin(self.nats.url)
        self.adm.add_stream("CRASH", ["crash.>"])
        cl = self.cl
        cl.q("postgres", f"CREATE DATABASE {DB}")
        cl.q(DB, "CREATE EXTENSION pg_notifier")
        cl.q(DB, "CREATE TABLE items (id int PRIMARY KEY)")
        cl.q(DB, "SELECT notifier.watch('items', channel => 'crash')")
        self.route = cl.one(DB, "SELECT notifier.add_nats('crash', %s, subject => 'crash.{table}',"
                                " concurrency => 256, max_attempts => 100)", (self.nats.url,))
        log(f"nats-server {self.nats.url}; route {self.route}")

    def stop(self):
        if self.nats is not None:
            self.nats.cleanup()
        return super().stop()

    def delivered(self):
        return self.cl.one(DB, "SELECT count(*) FROM notifier.deliveries WHERE route_id = %s"
                               " AND status = 'delivered'", (self.route,))

    def produce(self, first, n):
        for i in range(first, first + n, 500):
            self.cl.q(DB, "INSERT INTO items SELECT generate_series(%s::int, %s::int)",
                      (i, min(i + 499, first + n - 1)))

    def step_immediate(self):
        cl = self.cl
        self.produce(1, EVENTS)
        poll("a part of the burst delivered", 60, lambda: (lambda d: (d >= EVENTS // 10, d))(self.delivered()))
        before = self.delivered()
        took = cl.restart("immediate")
        log(f"pg_ctl restart -m immediate with {before} of {EVENTS} delivered ({took:.2f} s)")
        self.produce(EVENTS + 1, EVENTS)
        total = 2 * EVENTS
        poll(f"{total} delivered", 180, lambda: (lambda d: (d >= total, d))(self.delivered()))
        committed = cl.one(DB, "SELECT count(*) FROM items")
        self.check(committed == total, f"{committed} rows committed, expected {total}")
        st = cl.q(DB, "SELECT status, count(*) FROM notifier.deliveries WHERE route_id = %s"
                      " GROUP BY 1", (self.route,))
        self.check(dict(st) == {"delivered": total}, f"delivery rows: {st}")
        info = self.adm.info("CRASH")
        msgs = self.adm.messages("CRASH", count=info["messages"], idle_ms=5000)
        ids = [m["headers"]["Nats-Msg-Id"] for m in msgs]
        event_ids = {r[0] for r in cl.q(DB, "SELECT event_id FROM notifier.deliveries"
                                            " WHERE route_id = %s", (self.route,))}
        self.check(len(ids) == len(set(ids)) == info["messages"] == total,
                   f"messages {len(ids)}, distinct ids {len(set(ids))}, stream count "
                   f"{info['messages']}, committed events {total}")
        self.check(set(ids) == event_ids, "the stream's ids are not the committed events'")
        self.result(f"restart -m immediate mid-burst: {total} events, each in the stream exactly once")


STEPS = [Step("immediate", "pg_ctl restart -m immediate mid-burst", Test.step_immediate)]


if __name__ == "__main__":
    Test().run(STEPS)
