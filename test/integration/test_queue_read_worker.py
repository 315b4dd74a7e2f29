#!/usr/bin/python3
"""Integration test of notifier.read() / ack() / nack() and max_reads on events
the worker wrote into notifier.queue (issue 18, queue consumption).

  [killed]    a consumer reads in its own connection and is killed
              (pg_terminate_backend) before it acks: nobody else gets those
              events inside their vt; after it they come back to another
              consumer with read_ct 2; ack() removes them, and they are gone
              for good (the next read, past a second vt, gets nothing);
  [poison]    a route with max_reads 2: an event nacked twice is, at the third
              read, in notifier.dead_letters of that route with its reason,
              and the other events of that read are returned;
  [consumers] 4 concurrent consumers read + ack while events are produced:
              every event acked exactly once, none lost.

Runs against test/run's cluster (its database added to pg_notifier.databases by
itlib.run_worker_test).  Debian's python3:
    /usr/bin/python3 test/integration/test_queue_read_worker.py [STEP...]
"""

import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, Threads, WorkerCtx, connect, log, run_worker_test, wait_for  # noqa: E402

NAME = "test_queue_read_worker"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "180"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_queue_read")
VT_S = 1.0          # the short visibility timeout of [killed]
EVENTS = 2000       # [consumers]
CONSUMERS = 4


def queued(db, channel):
    return db.execute("SELECT count(*) FROM notifier.queue WHERE channel = %s", (channel,)).fetchone()[0]


def read(conn, channel, vt, n=100):
    return conn.execute("SELECT id, payload, read_ct FROM notifier.read(%s, %s::interval, %s)",
                        (channel, vt, n)).fetchall()


def step_killed(ctx):
    db = ctx.db
    db.execute("CREATE TABLE qr_t (id int PRIMARY KEY, v text)")
    db.execute("SELECT notifier.watch('qr_t', channel => 'qr')")
    db.execute("SELECT notifier.add_queue('qr')")
    db.execute("INSERT INTO qr_t SELECT g, 'v' || g FROM generate_series(1, 10) g")
    wait_for("10 events in notifier.queue", lambda: (queued(db, "qr") == 10, None), 30)

    consumer = connect(DB, autocommit=True)
    pid = consumer.execute("SELECT pg_backend_pid()").fetchone()[0]
    first = read(consumer, "qr", f"{VT_S} s", 6)
    ctx.check([r[2] for r in first] == [1] * 6, f"first read: read_ct {[r[2] for r in first]}")
    first_ids = [r[0] for r in first]
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for("the consumer gone", lambda: (db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 0, None), 30)
    try:
        consumer.close()
    except Exception:
        pass

    # inside the vt: only the other 4 (the vt may already have passed on a
    # slow machine: then the killed consumer's events may come too, read_ct 2)
    other = connect(DB, autocommit=True)
    ctx.conns.append(other)
    rest = read(other, "qr", "1 hour")
    inside = [r for r in rest if r[0] not in first_ids]
    ctx.check(len(inside) == 4 and all(r[2] == 1 for r in inside),
              f"the events not read before: {[(r[0], r[2]) for r in inside]}")
    again = [r for r in rest if r[0] in first_ids]

    def back():
        again.extend(read(other, "qr", "1 hour"))
        return len(again) == 6, len(again)
    wait_for("the killed consumer's events back after their vt", back, 30)
    ctx.check(sorted(r[0] for r in again) == sorted(first_ids) and all(r[2] == 2 for r in again),
              f"after vt: {[(r[0], r[2]) for r in again]} (want {first_ids}, read_ct 2)")
    n = other.execute("SELECT notifier.ack(%s)", ([r[0] for r in again + inside],)).fetchone()[0]
    ctx.check(n == 10, f"ack removed {n}, want 10")
    ctx.check(queued(db, "qr") == 0, f"{queued(db, 'qr')} events left after ack")
    ctx.result("a killed consumer's events come back after vt with read_ct 2; ack removes them")


def step_poison(ctx):
    db = ctx.db
    db.execute("CREATE TABLE qp_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('qp_t', channel => 'qp')")
    route = db.execute("SELECT notifier.add_queue('qp', max_reads => 2)").fetchone()[0]
    db.execute("INSERT INTO qp_t VALUES (1)")
    wait_for("the event in notifier.queue", lambda: (queued(db, "qp") == 1, None), 30)
    for i in (1, 2):
        rows = read(db, "qp", "1 hour")
        ctx.check([r[2] for r in rows] == [i], f"read {i}: {rows}")
        db.execute("SELECT notifier.nack(%s)", ([r[0] for r in rows],))
    db.execute("INSERT INTO qp_t VALUES (2)")
    wait_for("the second event in notifier.queue", lambda: (queued(db, "qp") == 2, None), 30)
    rows = read(db, "qp", "1 hour")
    ctx.check([(r[1]["key"]["id"], r[2]) for r in rows] == [(2, 1)], f"third read: {rows}")
    dl = db.execute("SELECT event::jsonb -> 'key' ->> 'id', reason FROM notifier.dead_letters"
                    " WHERE route_id = %s", (route,)).fetchall()
    ctx.check(dl == [("1", "read 2 times without an ack (max_reads 2)")], f"dead letters: {dl}")
    ctx.result(f"max_reads 2: dead letter {dl}")


def step_consumers(ctx):
    db = ctx.db
    db.execute("CREATE TABLE qc_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('qc_t', channel => 'qc')")
    db.execute("SELECT notifier.add_queue('qc')")
    acked = []
    lock = threading.Lock()
    done = threading.Event()

    def consume():
        conn = connect(DB, autocommit=True)
        try:
            while True:
                rows = read(conn, "qc", "1 hour", 50)
                if rows:
                    conn.execute("SELECT notifier.ack(%s)", ([r[0] for r in rows],))
                    with lock:
                        acked.extend(r[1]["key"]["id"] for r in rows)
                elif done.is_set() and queued(conn, "qc") == 0:
                    return
        finally:
            conn.close()

    threads = Threads("consumers")
    for _ in range(CONSUMERS):
        threads.start(consume)
    for lo in range(1, EVENTS + 1, 100):
        db.execute("INSERT INTO qc_t SELECT generate_series(%s::int, %s::int)", (lo, lo + 99))
    wait_for("every event in notifier.queue or acked", lambda: (
        len(acked) + queued(db, "qc") >= EVENTS, len(acked)), 60)
    done.set()
    threads.join(60)
    dup = len(acked) - len(set(acked))
    ctx.check(dup == 0 and sorted(acked) == list(range(1, EVENTS + 1)),
              f"{len(acked)} acked, {dup} twice, {EVENTS - len(set(acked))} missing")
    ctx.result(f"{CONSUMERS} consumers: {len(acked)} events acked, each once")


STEPS = [
    Step("killed", "a killed consumer's events come back after vt; ack removes", step_killed),
    Step("poison", "max_reads dead-letters a poison event", step_poison),
    Step("consumers", "concurrent consumers read + ack every event once", step_consumers),
]


if __name__ == "__main__":
    log(f"{NAME}: vt {VT_S} s, {EVENTS} events to {CONSUMERS} consumers")
    run_worker_test(NAME, STEPS, WorkerCtx(), DB, timeout=TIMEOUT)
