#!/usr/bin/python3
"""
Coalescing seen by a real LISTEN client (psycopg 3).

  [coalesced]    one transaction updates the same 10,000 rows 5 times each;
                 the listener must receive exactly 10,000 events, one per
                 row, each carrying the row's final values, in the order of
                 the rows' first change;
  [uncoalesced]  a second transaction with the same work and dedup =>
                 false must give 50,000 events.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Checks, Listener, Step, TestFailure, drop_databases, log, main,  # noqa: E402
                   new_database, parse)

NAME = "test_coalesce"
TIMEOUT = 300
ROWS = 10_000
ROUNDS = 5
DB = "notifier_coalesce_test"


def drain(lis, channel):
    """Payloads on channel until the sentinel 'END' (sent after the workload)."""
    got = lis.until(lambda ch, p: p == "END", TIMEOUT, "the END sentinel")
    return [n.payload for n in got if n.payload != "END" and n.channel == channel]


def setup(ctx):
    admin = ctx.connect("postgres")
    new_database(admin, DB)
    ctx.writer = writer = ctx.connect(DB)
    writer.execute("CREATE EXTENSION pg_notifier")
    writer.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int, touched int)")
    writer.execute("INSERT INTO accounts SELECT g, 0, 0 FROM generate_series(1, %s) g", (ROWS,))
    writer.execute("SELECT notifier.watch('accounts', channel => 'acc')")
    ctx.lis = Listener(DB, ["acc"])
    ctx.conns.append(ctx.lis.conn)
    log(f"database {DB}: {ROWS} rows in accounts, watched on channel acc")


def cleanup(ctx):
    return drop_databases(None, [DB])


def step_coalesced(ctx):
    writer = ctx.writer
    # 5 passes over all rows, in one transaction; the last pass leaves
    # balance = id * 5 and touched = 5
    with writer.transaction():
        for r in range(1, ROUNDS + 1):
            writer.execute("UPDATE accounts SET balance = id * %s, touched = %s", (r, r))
    writer.execute("NOTIFY acc, 'END'")
    events = [parse(p) for p in drain(ctx.lis, "acc")]

    if len(events) != ROWS:
        raise TestFailure(f"expected {ROWS} coalesced events, got {len(events)}")
    ids = [e["key"]["id"] for e in events]
    if len(set(ids)) != ROWS:
        raise TestFailure("some row got more than one event")
    for e in events:
        row = e["row"]
        if e["op"] != "UPDATE" or row["balance"] != row["id"] * ROUNDS or row["touched"] != ROUNDS:
            raise TestFailure(f"event does not carry the final values: {e}")
    xids = {e["xid"] for e in events}
    seqs = [int(e["id"].split(".")[1]) for e in events]
    if len(xids) != 1 or seqs != list(range(1, ROWS + 1)):
        raise TestFailure("events are not one transaction's, numbered 1..N in order")
    ctx.result(f"{ROWS} rows x {ROUNDS} updates in one transaction -> {len(events)} events "
               "with final values")


def step_uncoalesced(ctx):
    writer = ctx.writer
    # the same without coalescing: every change is an event
    writer.execute("SELECT notifier.watch('accounts', channel => 'acc', dedup => false)")
    with writer.transaction():
        for r in range(1, ROUNDS + 1):
            writer.execute("UPDATE accounts SET balance = id * %s + 1, touched = %s", (r, r))
    writer.execute("NOTIFY acc, 'END'")
    raw = drain(ctx.lis, "acc")
    if len(raw) != ROWS * ROUNDS:
        raise TestFailure(f"expected {ROWS * ROUNDS} uncoalesced events, got {len(raw)}")
    ctx.result(f"uncoalesced -> {len(raw)}")


STEPS = [
    Step("coalesced", f"{ROUNDS} updates of {ROWS} rows in one transaction, coalesced",
         step_coalesced),
    Step("uncoalesced", "the same with \"coalesce\" => false", step_uncoalesced),
]


if __name__ == "__main__":
    main(NAME, STEPS, Checks(), setup=setup, cleanup=cleanup, timeout=TIMEOUT, keep_going=False)
