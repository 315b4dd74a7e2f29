#!/usr/bin/python3
"""test/bench/transform_cost.py DB -- the measuring half of test/bench/transform.

Connection parameters come from the environment (PGHOST, PGPORT, PGUSER) that
test/lib/cluster.sh exports.  One measurement of a mode:
  1. notifier.routes holds one queue route on the channel, into bench_q, with
     the mode's filter or transform; one event must reach bench_q through it
     (the worker has loaded it), then bench_q is emptied and a CHECKPOINT run;
  2. BENCH_TXNS transactions of a BENCH_ROWS-row INSERT ... SELECT into the
     watched table (delivery 'auto': NOTIFY and the outbox, as by default);
  3. done when notifier.route_stats() counts every event received by the
     route; events/s = events / (done - start of the first INSERT), and the
     worker's CPU seconds (/proc/PID/stat) over the same span per event.
The medians over the rounds are reported with their ratio to "none".
"""
import os
import statistics
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import wait_for  # noqa: E402

DB = sys.argv[1]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TXNS = int(os.environ.get("BENCH_TXNS", "10"))
ROWS = int(os.environ.get("BENCH_ROWS", "10000"))
MODES = os.environ.get("BENCH_MODES", "none filter sql plpgsql c").split()
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "120"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# mode -> (filter, transform) of the route
ROUTES = {
    "none": (None, None),
    "filter": ('$.op == "INSERT"', None),
    "sql": (None, "bench_identity_sql(jsonb)"),
    "plpgsql": (None, "bench_identity_plpgsql(jsonb)"),
    "c": (None, "pg_catalog.jsonb_strip_nulls(jsonb)"),
}
DESCRIBE = {
    "none": "no filter, no transform",
    "filter": "filter `$.op == \"INSERT\"` (every event passes)",
    "sql": "transform: `LANGUAGE sql` identity",
    "plpgsql": "transform: `LANGUAGE plpgsql` identity",
    "c": "transform: `jsonb_strip_nulls(jsonb)` (C; no nulls in the events)",
}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait(what, fn, timeout):
    """fn()'s first true value, polled until timeout (itlib.wait_for)."""
    return wait_for(what, lambda: (lambda v: (bool(v), v))(fn()), timeout, interval=0.01)[0]


def received(db, route):
    row = db.execute("SELECT received FROM notifier.route_stats() WHERE route_id = %s",
                     (route,)).fetchone()
    return row[0] if row else 0


def setup(db):
    db.execute("CREATE EXTENSION IF NOT EXISTS pg_notifier")
    db.execute("CREATE TABLE bench_t (id bigserial PRIMARY KEY, customer int, status text,"
               " total numeric, note text, created_at timestamptz DEFAULT now())")
    db.execute("SELECT notifier.watch('bench_t', channel => 'bench', payload => 'row')")
    db.execute("CREATE TABLE bench_q (id bigserial PRIMARY KEY, channel text NOT NULL,"
               " payload jsonb NOT NULL)")
    db.execute("CREATE FUNCTION bench_identity_sql(e jsonb) RETURNS jsonb"
               " LANGUAGE sql IMMUTABLE AS 'SELECT e'")
    db.execute("CREATE FUNCTION bench_identity_plpgsql(e jsonb) RETURNS jsonb"
               " LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN e; END'")
    return wait("the worker", lambda: db.execute(
        "SELECT pid FROM notifier.status() WHERE database = current_database()"
        " AND state IN ('listening', 'forwarding')").fetchone(), 30)[0]


def measure(db, pid, mode):
    flt, transform = ROUTES[mode]
    db.execute("SELECT notifier.remove_route(id) FROM notifier.routes")
    route = db.execute("SELECT notifier.add_queue('bench', 'bench_q', filter => %s,"
                       " transform => %s::regprocedure)", (flt, transform)).fetchone()[0]
    db.execute("INSERT INTO bench_t (customer, status, total, note) VALUES (0, 'warm', 0, 'up')")
    wait("the warm-up event", lambda: received(db, route) >= 1, 30)
    base = received(db, route)
    db.execute("TRUNCATE bench_q")
    db.execute("CHECKPOINT")
    n = TXNS * ROWS
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    for _ in range(TXNS):
        db.execute("INSERT INTO bench_t (customer, status, total, note)"
                   " SELECT g %% 10000, 'new', g / 100.0, 'order note ' || g"
                   " FROM generate_series(1, %s) g", (ROWS,))
    wait(f"{mode}: {n} events", lambda: received(db, route) - base >= n, TIMEOUT)
    secs = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    stored = db.execute("SELECT count(*) FROM bench_q").fetchone()[0]
    if stored != n:
        raise SystemExit(f"{mode}: {stored} events in bench_q, expected {n}")
    return n / secs, cpu / n * 1e6


def main():
    db = psycopg.connect(dbname=DB, autocommit=True)
    pid = setup(db)
    rates = {m: [] for m in MODES}
    cpus = {m: [] for m in MODES}
    for r in range(ROUNDS):
        order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
        for mode in order:
            rate, cpu = measure(db, pid, mode)
            rates[mode].append(rate)
            cpus[mode].append(cpu)
            print(f"<!-- round {r + 1} {mode}: {rate:,.0f} events/s, {cpu:.1f} us worker CPU per event -->",
                  flush=True)
    base_rate = statistics.median(rates["none"]) if "none" in rates else None
    base_cpu = statistics.median(cpus["none"]) if "none" in cpus else None
    print(f"\n## Route filter and transform: cost in the worker\n")
    print(f"{ROUNDS} rounds of {TXNS} x {ROWS:,}-row INSERT ... SELECT per mode, one queue route,"
          f" medians; ratio to `none` of the same run.\n")
    print("| mode | events/s | ratio | worker CPU µs/event | ratio |")
    print("|---|---:|---:|---:|---:|")
    for m in MODES:
        rate = statistics.median(rates[m])
        cpu = statistics.median(cpus[m])
        rr = f"{rate / base_rate:.2f}" if base_rate else "-"
        cr = f"{cpu / base_cpu:.2f}" if base_cpu else "-"
        print(f"| {DESCRIBE[m]} | {rate:,.0f} | {rr} | {cpu:.1f} | {cr} |")


if __name__ == "__main__":
    main()
