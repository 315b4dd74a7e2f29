#!/usr/bin/python3
"""Example: a notifier.pop() queue consumer with psycopg 3.

The background worker forwards the events of a routed channel into
notifier.queue; consumers take them with notifier.pop(channel, max) inside their
own transaction, so that processing and removal commit (or roll back) together.
Any number of consumers can share the queue (FOR UPDATE SKIP LOCKED).

Run as a test (test/run examples): against the cluster of the libpq environment
(PGHOST, PGPORT, PGUSER; shared_preload_libraries = pg_notifier) it creates the
database pg_notifier_ex_queue, adds it to pg_notifier.databases (ALTER SYSTEM +
reload; put back as it was at the end, and the database dropped), watches a
table, adds a queue route, waits until notifier.status() lists the channel, and
  1. produces N events in many transactions;
  2. the first batch's processing fails: the transaction rolls back and those
     events are still in the queue;
  3. consumes with pop(channel, 50) in a loop, one transaction per batch, and
     checks exactly N events arrived, each once, in commit order, well formed;
     the queue is then empty.
Exit status 0 when all held, 1 otherwise.
"""

import os
import re
import sys
import time

import psycopg
from psycopg import sql

NAME = "python_queue_consumer"
DB = os.environ.get("PG_NOTIFIER_EXAMPLE_DB", "pg_notifier_ex_queue")
CHANNEL = "orders"
GUC = "pg_notifier.databases"
N_INSERT = 150
ID_RE = re.compile(r"^(\d+)\.(\d+)$")


class Failure(Exception):
    pass


class ProcessingError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_until(what, fn, timeout=15):
    t0 = time.monotonic()
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() - t0 > timeout:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def saved_databases(admin):
    """pg_notifier.databases as set in postgresql.auto.conf (None: not set there)."""
    row = admin.execute("SELECT setting FROM pg_file_settings WHERE name = %s "
                        "AND sourcefile LIKE '%%postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1",
                        (GUC,)).fetchone()
    return row[0] if row else None


def set_databases(admin, value):
    if value is None:
        admin.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(GUC)))
    else:
        admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(GUC), sql.Literal(value)))
    admin.execute("SELECT pg_reload_conf()")


def consume(conn, channel, process, batch=50, want=None, timeout=20):
    """The consumer loop: pop a batch and process it in one transaction.
    Stops when `want` events were processed (or the queue stays empty)."""
    done = 0
    idle_since = time.monotonic()
    while want is None or done < want:
        try:
            with conn.transaction():
                rows = conn.execute("SELECT id, channel, payload FROM notifier.pop(%s, %s)",
                                    (channel, batch)).fetchall()
                for qid, ch, payload in rows:
                    process(qid, ch, payload)      # raising here rolls the pop back
        except ProcessingError as ex:
            print(f"   batch of {len(rows)} not processed ({ex}): rolled back", flush=True)
            continue
        done += len(rows)
        if rows:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > (timeout if want else 0.5):
            break
        else:
            time.sleep(0.05)
    return done


def produce(conn):
    """N events in many transactions; returns the expected (op, id) in commit order."""
    expected = []
    for i in range(1, N_INSERT + 1):
        conn.execute("INSERT INTO orders (id, status, total) VALUES (%s, 'new', %s)", (i, i))
        expected.append(("INSERT", i))
    with conn.transaction():                     # one transaction, 30 events
        for i in range(1, 31):
            conn.execute("UPDATE orders SET status = 'paid', total = total + 1 WHERE id = %s", (i,))
            expected.append(("UPDATE", i))
    with conn.transaction():                     # one transaction, 20 events
        for i in range(N_INSERT - 19, N_INSERT + 1):
            conn.execute("DELETE FROM orders WHERE id = %s", (i,))
            expected.append(("DELETE", i))
    return expected


def main():
    t_start = time.monotonic()
    errors = []
    admin = psycopg.connect(dbname="postgres", autocommit=True)
    saved = saved_databases(admin)
    if saved:        # a run that did not clean up: never keep our own database
        saved = ", ".join(d.strip() for d in saved.split(",") if d.strip() != DB) or None
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    try:
        db = psycopg.connect(dbname=DB, autocommit=True)
        db.execute("CREATE EXTENSION pg_notifier")
        db.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric)")
        db.execute("SELECT notifier.watch('orders')")
        current = admin.execute(sql.SQL("SHOW {}").format(sql.SQL(GUC))).fetchone()[0]
        dbs = [d.strip() for d in current.split(",") if d.strip() and d.strip() != DB]
        set_databases(admin, ", ".join(dbs + [DB]))
        route = db.execute("SELECT notifier.add_queue(%s)", (CHANNEL,)).fetchone()[0]

        def listening():
            r = db.execute("SELECT state, channels FROM notifier.status() WHERE database = %s",
                           (DB,)).fetchone()
            return r is not None and r[0] in ("listening", "forwarding") and CHANNEL in (r[1] or [])
        wait_until(f"notifier.status() to list channel {CHANNEL}", listening)
        print(f"   worker of {DB} listens on {CHANNEL} (route {route})", flush=True)

        expected = produce(db)
        n = len(expected)

        # a consumer whose processing of its first batch fails: nothing is lost
        wait_until("the first events in the queue",
                   lambda: db.execute("SELECT count(*) FROM notifier.queue").fetchone()[0] >= 50)

        def failing(qid, ch, payload):
            raise ProcessingError("simulated failure")
        try:
            with db.transaction():
                rows = db.execute("SELECT * FROM notifier.pop(%s, 50)", (CHANNEL,)).fetchall()
                for r in rows:
                    failing(*r[:3])
        except ProcessingError:
            pass
        check(len(rows) == 50, f"the first pop returned {len(rows)} rows, expected 50")
        first_ids = [r[0] for r in rows]

        got = []

        def process(qid, ch, payload):
            check(ch == CHANNEL, f"channel {ch!r}")
            got.append((qid, payload))

        consumed = consume(db, CHANNEL, process, batch=50, want=n)
        check(consumed == n, f"consumed {consumed} events, expected exactly {n}")
        check([q for q, _ in got[:50]] == first_ids,
              "the rolled-back batch did not come back first")
        ops = [(p["op"], p["key"]["id"]) for _, p in got]
        check(ops == expected, f"not in commit order: first difference at "
              f"{next((i for i, (a, b) in enumerate(zip(ops, expected)) if a != b), len(ops))}")
        qids = [q for q, _ in got]
        check(qids == sorted(qids) and len(set(qids)) == n, "queue ids not increasing / repeated")
        evids = [p["id"] for _, p in got]
        check(len(set(evids)) == n, "an event id repeated")
        last = (0, 0)
        for _, p in got:
            check(list(p)[:6] == ["id", "op", "schema", "table", "xid", "ts"] or
                  set(p) >= {"id", "op", "schema", "table", "xid", "ts", "key", "row"},
                  f"keys of {p}")
            m = ID_RE.match(p["id"])
            check(m and m.group(1) == p["xid"], f"id {p['id']} vs xid {p['xid']}")
            cur = (int(m.group(1)), int(m.group(2)))
            check(cur > last, f"event ids not increasing: {p['id']} after {last}")
            last = cur
            check(p["schema"] == "public" and p["table"] == "orders", f"table of {p}")
        upd = [p for _, p in got if p["op"] == "UPDATE"]
        check(len({p["xid"] for p in upd}) == 1, "the 30 updates were not one transaction")
        check(upd[0]["row"] == {"id": 1, "status": "paid", "total": 2}, f"update row {upd[0]}")
        rest = consume(db, CHANNEL, process, batch=50)
        check(rest == 0, f"{rest} more events after the {n} expected")
        print(f"   {n} events consumed with pop(channel, 50): each once, in commit order; "
              f"a failed batch was rolled back and came back", flush=True)
        db.close()
    except Failure as ex:
        errors.append(str(ex))
    except psycopg.Error as ex:
        errors.append(f"{type(ex).__name__}: {ex}")
    finally:
        try:
            set_databases(admin, saved)
            t0 = time.monotonic()
            while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                "AND backend_type = 'pg_notifier worker'", (DB,)).fetchone()[0]:
                if time.monotonic() - t0 > 10:
                    errors.append(f"the worker of {DB} still runs 10 s after the reload")
                    break
                time.sleep(0.1)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        except psycopg.Error as ex:
            errors.append(f"cleanup: {type(ex).__name__}: {ex}")
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
