#!/usr/bin/python3
"""Example: a LISTEN consumer of pg_notifier events with psycopg 3, reconnecting.

The consumer (a thread) connects, LISTENs on the channel of a watched table and
waits for notifications with select(); when its connection breaks it reconnects
with a short backoff, LISTENs again and goes on.  NOTIFY is not durable: events
committed while it is disconnected are not delivered to it, so a real consumer
re-reads the state it cares about after a reconnect (here: it only logs it).
An oversize event arrives as a reference and is resolved with notifier.payload(ref).

Run as a test (test/run examples): against the cluster of the libpq environment
(PGHOST, PGPORT, PGUSER) it creates the database pg_notifier_ex_listen, watches
a table `orders`, and
  1. produces a workload, checks the consumer got every event, in commit order;
  2. kills the consumer's backend with pg_terminate_backend() from another
     connection, waits until the consumer has reconnected and LISTENs again;
  3. produces a second workload (inserts, updates, deletes, an oversize row) and
     checks every event arrived after the reconnect, in commit order and well
     formed (keys id, op, schema, table, xid, ts, key, row in that order; id =
     xid.n), and that notifier.payload(ref) returns the full oversize event.
The database is dropped at the end.  Exit status 0 when all held, 1 otherwise.
"""

import json
import os
import re
import select
import sys
import threading
import time

import psycopg
from psycopg import sql

NAME = "python_listen"
DB = os.environ.get("PG_NOTIFIER_EXAMPLE_DB", "pg_notifier_ex_listen")
CHANNEL = "orders"
TIMEOUT = 30

ID_RE = re.compile(r"^(\d+)\.(\d+)$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


# ------------------------------------------------------------------ the consumer

class Consumer(threading.Thread):
    """LISTEN loop with reconnect.  handle(event) is called for every event."""

    def __init__(self, conninfo, channel, handle):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.channel = channel
        self.handle = handle
        self.stop = threading.Event()
        self.listening = threading.Event()     # set while LISTEN is in effect
        self.backend_pid = None
        self.connects = 0
        self.errors = []

    def run(self):
        backoff = 0.1
        while not self.stop.is_set():
            conn = None
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True)
                conn.add_notify_handler(self.on_notify)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self.backend_pid = conn.info.backend_pid
                self.connects += 1
                self.listening.set()
                backoff = 0.1
                while not self.stop.is_set():
                    # wait for the server to send something, then let psycopg read it:
                    # a round trip delivers the pending notifications to on_notify
                    if select.select([conn.fileno()], [], [], 0.5)[0]:
                        conn.execute("SELECT 1")
            except psycopg.OperationalError as ex:
                self.listening.clear()
                print(f"   consumer: connection lost ({str(ex).strip().splitlines()[0]}); "
                      f"reconnecting in {backoff:.1f} s", flush=True)
                # here a real consumer would re-read what it may have missed
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as ex:            # noqa: BLE001 -- reported by the test
                self.errors.append(f"consumer: {type(ex).__name__}: {ex}")
                self.listening.clear()
                time.sleep(0.2)
            finally:
                if conn is not None:
                    conn.close()

    def on_notify(self, n):
        if n.channel != self.channel:
            return
        event = json.loads(n.payload)
        if event.get("truncated") and "ref" in event:
            # oversize: the NOTIFY carries a reference, the full event is in the table
            with psycopg.connect(self.conninfo, autocommit=True) as c:
                full = c.execute("SELECT notifier.payload(%s)::text", (event["ref"],)).fetchone()[0]
            event = dict(json.loads(full), resolved_ref=event["ref"])
        self.handle(event)


# ------------------------------------------------------------------ the test

class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_until(what, fn, timeout=10):
    t0 = time.monotonic()
    while not fn():
        if time.monotonic() - t0 > timeout:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def check_format(ev):
    keys = list(ev.keys())
    if ev.get("resolved_ref") is not None:
        keys.remove("resolved_ref")
    expect = {"INSERT": ["id", "op", "schema", "table", "xid", "ts", "key", "row"],
              "UPDATE": ["id", "op", "schema", "table", "xid", "ts", "key", "row"],
              "DELETE": ["id", "op", "schema", "table", "xid", "ts", "key", "row"]}
    check(ev.get("op") in expect, f"unexpected op in {ev}")
    check(keys == expect[ev["op"]], f"keys {keys}, expected {expect[ev['op']]}: {ev}")
    m = ID_RE.match(ev["id"])
    check(m is not None and m.group(1) == ev["xid"], f"id {ev['id']!r} is not <xid>.<n>: {ev}")
    check(TS_RE.match(ev["ts"]) is not None, f"ts {ev['ts']!r} is not ISO UTC")
    check(ev["schema"] == "public" and ev["table"] == "orders", f"schema/table: {ev}")
    check(isinstance(ev["key"], dict) and set(ev["key"]) == {"id"}, f"key: {ev}")
    check(ev["row"]["id"] == ev["key"]["id"], f"row.id != key.id: {ev}")


def produce(conn, start_id, big=False):
    """A small workload, one transaction per statement.  Returns the expected
    (op, key id) in commit order."""
    expected = []
    ids = list(range(start_id, start_id + 8))
    for i in ids:
        conn.execute("INSERT INTO orders (id, status, total) VALUES (%s, 'new', %s)", (i, i * 1.5))
        expected.append(("INSERT", i))
    for i in ids[:4]:
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (i,))
        expected.append(("UPDATE", i))
    conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (ids[0],))   # no-op: no event
    for i in ids[-2:]:
        conn.execute("DELETE FROM orders WHERE id = %s", (i,))
        expected.append(("DELETE", i))
    with conn.transaction():          # coalesced: one INSERT with the final row
        conn.execute("INSERT INTO orders (id, status, total) VALUES (%s, 'new', 1)", (start_id + 100,))
        conn.execute("UPDATE orders SET status = 'shipped' WHERE id = %s", (start_id + 100,))
    expected.append(("INSERT", start_id + 100))
    if big:
        conn.execute("INSERT INTO orders (id, status, total, note) VALUES (%s, 'big', 0, %s)",
                     (start_id + 200, "x" * 20000))
        expected.append(("INSERT", start_id + 200))
    return expected


def main():
    t_start = time.monotonic()
    errors = []
    base = psycopg.conninfo.make_conninfo("")        # libpq environment
    admin = psycopg.connect(base, dbname="postgres", autocommit=True)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    conninfo = psycopg.conninfo.make_conninfo(base, dbname=DB)
    consumer = None
    try:
        prod = psycopg.connect(conninfo, autocommit=True)
        prod.execute("CREATE EXTENSION pg_notifier")
        prod.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric, note text)")
        check(prod.execute("SELECT notifier.watch('orders')").fetchone()[0] == CHANNEL, "channel")

        received = []
        lock = threading.Lock()

        def handle(ev):
            with lock:
                received.append(ev)

        consumer = Consumer(conninfo, CHANNEL, handle)
        consumer.start()
        wait_until("the consumer to LISTEN", consumer.listening.is_set)

        # 1. before the reconnect
        exp1 = produce(prod, 1)
        wait_until(f"{len(exp1)} events before the reconnect", lambda: len(received) >= len(exp1))
        time.sleep(0.2)
        with lock:
            got1 = list(received)
        check([(e["op"], e["key"]["id"]) for e in got1] == exp1,
              f"before reconnect: got {[(e['op'], e['key']['id']) for e in got1]}, expected {exp1}")
        for e in got1:
            check_format(e)
        print(f"   {len(got1)} events before the reconnect, in commit order", flush=True)

        # 2. kill the consumer's backend; it must reconnect and LISTEN again
        old_pid = consumer.backend_pid
        check(prod.execute("SELECT pg_terminate_backend(%s)", (old_pid,)).fetchone()[0],
              f"pg_terminate_backend({old_pid}) failed")
        wait_until("the consumer to notice the lost connection",
                   lambda: consumer.connects >= 2 or not consumer.listening.is_set(), 10)
        wait_until("the consumer to reconnect and LISTEN again",
                   lambda: consumer.connects >= 2 and consumer.listening.is_set(), 10)
        check(consumer.backend_pid != old_pid, "same backend pid after the reconnect")
        check(prod.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                           (old_pid,)).fetchone()[0] == 0, "the old backend still exists")
        print(f"   backend {old_pid} terminated; consumer reconnected as {consumer.backend_pid}",
              flush=True)

        # 3. after the reconnect
        with lock:
            received.clear()
        exp2 = produce(prod, 1000, big=True)
        wait_until(f"{len(exp2)} events after the reconnect", lambda: len(received) >= len(exp2))
        time.sleep(0.2)
        with lock:
            got2 = list(received)
        check([(e["op"], e["key"]["id"]) for e in got2] == exp2,
              f"after reconnect: got {[(e['op'], e['key']['id']) for e in got2]}, expected {exp2}")
        for e in got2:
            check_format(e)
        ids = [e["id"] for e in got1 + got2]
        check(len(set(ids)) == len(ids), "duplicate event ids")
        by_key = {e["key"]["id"]: e for e in got2 if e["op"] == "INSERT"}
        check(by_key[1100]["row"] == {"id": 1100, "status": "shipped", "total": 1, "note": None},
              f"coalesced insert: {by_key[1100]}")
        check(by_key[1000]["row"]["total"] == 1500, f"numbers stay numbers: {by_key[1000]}")
        big = by_key[1200]
        check(big.get("resolved_ref") is not None, f"the oversize row was not sent as a reference: "
              f"{json.dumps(big)[:200]}")
        check(big["row"]["note"] == "x" * 20000, "notifier.payload(ref) did not return the full row")
        print(f"   {len(got2)} events after the reconnect, in commit order, well formed; "
              f"oversize ref {big['resolved_ref']} resolved ({len(json.dumps(big))} bytes)", flush=True)
        errors.extend(consumer.errors)
        prod.close()
    except Failure as ex:
        errors.append(str(ex))
    except psycopg.Error as ex:
        errors.append(f"{type(ex).__name__}: {ex}")
    finally:
        if consumer is not None:
            consumer.stop.set()
            consumer.join(5)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        admin.close()
    if errors:
        print(f"FAIL {NAME}:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"PASS {NAME} in {time.monotonic() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
