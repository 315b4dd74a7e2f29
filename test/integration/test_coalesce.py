#!/usr/bin/python3
"""
Coalescing seen by a real LISTEN client (psycopg 3).

One transaction updates the same 10,000 rows 5 times each; the listener must
receive exactly 10,000 events, one per row, each carrying the row's final
values, in the order of the rows' first change. A second transaction with
the same work and "coalesce" => false must give 50,000 events.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER).
"""
import json
import signal
import sys

import psycopg

ROWS = 10_000
ROUNDS = 5
DB = "notifier_coalesce_test"


def fail(msg):
    print(f"test_coalesce: FAIL: {msg}")
    sys.exit(1)


def drain(listener, channel):
    """Notifications on channel until the sentinel 'END' (sent after the workload)."""
    got = []
    for n in listener.notifies():
        if n.payload == "END":
            break
        if n.channel == channel:
            got.append(n.payload)
    return got


def main():
    signal.signal(signal.SIGALRM, lambda *_: fail("timed out waiting for events"))
    signal.alarm(300)

    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")

    with psycopg.connect(dbname=DB, autocommit=True) as writer, \
            psycopg.connect(dbname=DB, autocommit=True) as listener:
        writer.execute("CREATE EXTENSION pg_notifier")
        writer.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int, touched int)")
        writer.execute("INSERT INTO accounts SELECT g, 0, 0 FROM generate_series(1, %s) g", (ROWS,))
        writer.execute("SELECT notifier.watch('accounts', channel => 'acc')")
        listener.execute("LISTEN acc")

        # 5 passes over all rows, in one transaction; the last pass leaves
        # balance = id * 5 and touched = 5
        with writer.transaction():
            for r in range(1, ROUNDS + 1):
                writer.execute("UPDATE accounts SET balance = id * %s, touched = %s", (r, r))
        writer.execute("NOTIFY acc, 'END'")
        events = [json.loads(p) for p in drain(listener, "acc")]

        if len(events) != ROWS:
            fail(f"expected {ROWS} coalesced events, got {len(events)}")
        ids = [e["key"]["id"] for e in events]
        if len(set(ids)) != ROWS:
            fail("some row got more than one event")
        for e in events:
            row = e["row"]
            if e["op"] != "UPDATE" or row["balance"] != row["id"] * ROUNDS or row["touched"] != ROUNDS:
                fail(f"event does not carry the final values: {e}")
        xids = {e["xid"] for e in events}
        seqs = [int(e["id"].split(".")[1]) for e in events]
        if len(xids) != 1 or seqs != list(range(1, ROWS + 1)):
            fail("events are not one transaction's, numbered 1..N in order")

        # the same without coalescing: every change is an event
        writer.execute("SELECT notifier.watch('accounts', channel => 'acc', \"coalesce\" => false)")
        with writer.transaction():
            for r in range(1, ROUNDS + 1):
                writer.execute("UPDATE accounts SET balance = id * %s + 1, touched = %s", (r, r))
        writer.execute("NOTIFY acc, 'END'")
        raw = drain(listener, "acc")
        if len(raw) != ROWS * ROUNDS:
            fail(f"expected {ROWS * ROUNDS} uncoalesced events, got {len(raw)}")

    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {DB}")
    print(f"test_coalesce: ok: {ROWS} rows x {ROUNDS} updates in one transaction -> "
          f"{len(events)} events with final values; uncoalesced -> {len(raw)}")


if __name__ == "__main__":
    main()
