#!/usr/bin/python3
"""test/bench/backfill.py -- how long does notifier.backfill() take, and what
does it do to the latency of live events meanwhile?  One run, one
throw-away cluster (test/lib/owncluster.py), every number measured in it.

  1. a table of BENCH_BACKFILL_ROWS rows (id bigint key, two text columns, a
     numeric), watched, with a queue route; another table, "live", watched,
     with its own queue route;
  2. baseline: a producer commits one row into "live" BENCH_LIVE_HZ times a
     second for BENCH_BASELINE_SECS; the latency of each event is
     notifier.queue.received_at (the worker's transaction that wrote it)
     minus the event's "ts" (the producer's statement);
  3. the backfill of the big table (batch_size BENCH_BATCH) while the same
     producer runs: the time from backfill() until the last READ event is in
     notifier.queue (state 'done', outbox empty), rows/s, and the live
     events' latency during it.

A benchmark, never a test: nothing is enforced; it exits non-zero only when
something does not work (setup, a READ event missing).

    /usr/bin/python3 test/bench/backfill.py          (200,000 rows, about a minute)
    BENCH_BACKFILL_ROWS=1000000 /usr/bin/python3 test/bench/backfill.py

Environment: BENCH_BACKFILL_ROWS (200000), BENCH_BATCH (1000), BENCH_LIVE_HZ
(50), BENCH_BASELINE_SECS (5), PG_CONFIG or PG_BIN (the server binaries; the
extension must be installed there: make install), PG_OS_USER (postgres).
Output: Markdown on stdout, also written to test/bench/out/backfill.md.
"""

import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from owncluster import Cluster, forget_libpq_environment, poll  # noqa: E402

ROWS = int(os.environ.get("BENCH_BACKFILL_ROWS", "200000"))
BATCH = int(os.environ.get("BENCH_BATCH", "1000"))
HZ = float(os.environ.get("BENCH_LIVE_HZ", "50"))
BASELINE = float(os.environ.get("BENCH_BASELINE_SECS", "5"))
DB = "bench"


class Producer:
    """One row into "live" every 1/HZ seconds, until stopped."""

    def __init__(self, cl):
        self.cl = cl
        self.stop = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with self.cl.connect(DB) as c:
            nxt = time.monotonic()
            while not self.stop.is_set():
                c.execute("INSERT INTO live (v) VALUES (1)")
                self.n += 1
                nxt += 1 / HZ
                time.sleep(max(0, nxt - time.monotonic()))

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(30)


def latencies(cl, since_id):
    """ms from each live event's ts to its row in notifier.queue, after since_id."""
    rows = cl.q(DB, "SELECT extract(epoch FROM received_at - (payload->>'ts')::timestamptz) * 1000 "
                    "FROM notifier.queue WHERE channel = 'live' AND id > %s", (since_id,))
    return sorted(float(r[0]) for r in rows)


def pct(xs, p):
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait_live(cl, n):
    poll(f"{n} live events in the queue", 60,
         lambda: (lambda k: (k >= n, k))(cl.one(DB, "SELECT count(*) FROM notifier.queue WHERE channel = 'live'")),
         interval=0.1)


def main():
    forget_libpq_environment()
    cl = Cluster("bench_backfill", f"pg_notifier.databases = '{DB}'\n")
    done = cl.guard(3600)
    try:
        cl.initdb()
        cl.start()
        cl.q("postgres", f"CREATE DATABASE {DB}")
        cl.q(DB, "CREATE EXTENSION pg_notifier")
        cl.q(DB, "CREATE TABLE big (id bigint PRIMARY KEY, name text, note text, amount numeric)")
        t0 = time.monotonic()
        cl.q(DB, "INSERT INTO big SELECT g, 'name ' || g, md5(g::text), g / 100.0 "
                 "FROM generate_series(1, %s) g", (ROWS,))
        cl.q(DB, "VACUUM ANALYZE big")
        load = time.monotonic() - t0
        cl.q(DB, "CREATE TABLE live (id serial PRIMARY KEY, v int)")
        for t in ("big", "live"):
            cl.q(DB, f"SELECT notifier.watch('{t}')")
            cl.q(DB, f"SELECT notifier.add_queue('{t}')")
        time.sleep(1)       # the worker takes the routes in

        prod = Producer(cl)
        prod.start()
        time.sleep(BASELINE)
        prod.finish()
        wait_live(cl, prod.n)
        base = latencies(cl, 0)
        last_id = cl.one(DB, "SELECT coalesce(max(id), 0) FROM notifier.queue")

        prod = Producer(cl)
        prod.start()
        t0 = time.monotonic()
        bid = cl.one(DB, "SELECT notifier.backfill('big', batch_size => %s)", (BATCH,))
        poll("the backfill done and its events in the queue", 3600,
             lambda: (lambda s: (s[0] != "running" and s[1] == 0, s))(cl.q(
                 DB, "SELECT state, (SELECT count(*) FROM notifier.outbox WHERE channel = 'big') "
                     "FROM notifier.backfills WHERE id = %s", (bid,))[0]), interval=0.05)
        secs = time.monotonic() - t0
        prod.finish()
        wait_live(cl, prod.n + len(base))
        during = latencies(cl, last_id)
        state, sent = cl.q(DB, "SELECT state, rows_sent FROM notifier.backfills WHERE id = %s", (bid,))[0]
        reads = cl.one(DB, "SELECT count(*) FROM notifier.queue WHERE channel = 'big'")
        if state != "done" or sent != ROWS or reads != ROWS:
            print(f"backfill {bid}: state {state}, {sent} rows sent, {reads} READ events in the queue; "
                  f"expected {ROWS}", file=sys.stderr)
            return 1

        out = [
            "# notifier.backfill() benchmark",
            "",
            f"{ROWS} rows (loaded in {load:.1f} s), batch_size {BATCH}; live events at {HZ:g}/s "
            f"into another watched table; {os.cpu_count()} CPUs, shared.",
            "",
            "| | value |",
            "|---|---|",
            f"| backfill: backfill() to the last READ event in notifier.queue | {secs:.1f} s |",
            f"| rows/s | {ROWS / secs:,.0f} |",
            "",
            "| live event latency (ms, ts -> notifier.queue) | n | p50 | p99 | max |",
            "|---|---|---|---|---|",
            f"| idle | {len(base)} | {pct(base, 50):.1f} | {pct(base, 99):.1f} | {max(base or [0]):.1f} |",
            f"| during the backfill | {len(during)} | {pct(during, 50):.1f} | {pct(during, 99):.1f} "
            f"| {max(during or [0]):.1f} |",
            "",
            f"(mean during: {statistics.mean(during or [0]):.1f} ms)",
        ]
        text = "\n".join(out) + "\n"
        print(text)
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "backfill.md"), "w") as f:
            f.write(text)
        return 0
    finally:
        done.set()
        cl.cleanup()


if __name__ == "__main__":
    sys.exit(main())
