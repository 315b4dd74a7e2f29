#!/usr/bin/python3
"""test/bench/queue_load.py -- the measuring half of test/bench/queue.

Run with Debian's /usr/bin/python3 (psycopg 3).  Connection parameters come
from the environment (PGHOST, PGPORT, PGUSER) that test/lib/cluster.sh exports.

  queue_load.py drain --method M [options]    fill the queue with N events,
                                              then C consumers drain it; one
                                              JSON line
  queue_load.py sustain --method M [options]  a producer at --rate while C
                                              consumers drain, --seconds
                                              long; one JSON line
  queue_load.py report RESULTS META           the Markdown report

Methods: pop (notifier.pop(ch, B)), read_ack (notifier.read(ch, '30 s', B)
then notifier.ack(ids)), pgmq (pgmq.read(q, 30, B) then pgmq.delete(q, ids)).
Every consumer is one autocommit connection; every statement of a method is
one round trip.  Clocks: time.monotonic() of this process.
"""
import json
import statistics
import sys
import threading
import time

import psycopg

from webhook_load import paced      # the same directory: the pacing of the webhook benchmark

CHANNEL = "bench"       # notifier.queue's channel and pgmq's queue
# an event as the worker's queue sink writes it (payload 'row')
PAYLOAD_SQL = ("jsonb_build_object('id', g || '.1', 'op', 'INSERT', 'schema', 'public', 'table', 'orders', "
               "'xid', g::text, 'ts', '2026-11-21T19:10:38.812345+00:00', 'key', jsonb_build_object('id', g), "
               "'row', jsonb_build_object('id', g, 'customer', g %% 1000, 'status', 'paid', 'total', 12.5, "
               "'note', 'order note ' || g))")


def now():
    return time.monotonic()


def connect(db, autocommit=True):
    return psycopg.connect(dbname=db, autocommit=autocommit, application_name="bench queue_load")


class Method:
    def __init__(self, name, batch):
        self.name = name
        self.batch = batch
        self.table = "pgmq.q_bench" if name == "pgmq" else "notifier.queue"

    def empty(self, conn):
        if self.name == "pgmq":
            conn.execute("SELECT pgmq.purge_queue(%s)", (CHANNEL,))
        else:
            conn.execute("TRUNCATE notifier.queue")

    def fill(self, conn, lo, hi):
        """Events lo..hi, in chunks of 10,000 (one transaction each)."""
        for a in range(lo, hi + 1, 10000):
            b = min(hi, a + 9999)
            if self.name == "pgmq":
                conn.execute(f"SELECT count(*) FROM pgmq.send_batch(%s, ARRAY(SELECT {PAYLOAD_SQL} "
                             "FROM generate_series(%s::bigint, %s::bigint) g))", (CHANNEL, a, b))
            else:
                conn.execute(f"INSERT INTO notifier.queue (channel, payload) SELECT %s, {PAYLOAD_SQL} "
                             "FROM generate_series(%s::bigint, %s::bigint) g", (CHANNEL, a, b))

    def take(self, conn):
        """One batch: [(id, event number)], acknowledged."""
        if self.name == "pop":
            rows = conn.execute("SELECT id, (payload->'key'->>'id')::bigint FROM notifier.pop(%s, %s)",
                                (CHANNEL, self.batch)).fetchall()
        elif self.name == "read_ack":
            rows = conn.execute("SELECT id, (payload->'key'->>'id')::bigint FROM notifier.read(%s, '30 s', %s)",
                                (CHANNEL, self.batch)).fetchall()
            if rows:
                conn.execute("SELECT notifier.ack(%s::bigint[])", ([r[0] for r in rows],))
        else:
            rows = conn.execute("SELECT msg_id, (message->'key'->>'id')::bigint FROM pgmq.read(%s, 30, %s)",
                                (CHANNEL, self.batch)).fetchall()
            if rows:
                conn.execute("SELECT count(*) FROM pgmq.delete(%s, %s::bigint[])",
                             (CHANNEL, [r[0] for r in rows]))
        return rows

    def left(self, conn):
        return conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]


def table_state(conn, table):
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass), "
        "       pg_total_relation_size(%s::regclass), s.n_live_tup, s.n_dead_tup, s.n_tup_upd, "
        "       s.n_tup_hot_upd, s.n_tup_del, s.autovacuum_count "
        "  FROM pg_stat_user_tables s WHERE s.relid = %s::regclass",
        (table, table, table, table)).fetchone()
    keys = ("heap_bytes", "index_bytes", "total_bytes", "live_tuples", "dead_tuples", "updated",
            "hot_updated", "deleted", "autovacuums")
    return dict(zip(keys, row))


class Consumers:
    """C threads, each its own connection, taking batches until stop() and
    the queue is empty (or, with drain_to_empty, until it is empty)."""

    def __init__(self, db, method, n):
        self.db = db
        self.method = method
        self.n = n
        self.taken = [[] for _ in range(n)]
        self.batches = [0] * n
        self.empty_polls = [0] * n
        self.errors = []
        self.stopping = threading.Event()
        self.t_end = [None] * n
        self.conns = [connect(db) for _ in range(n)]
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, k):
        conn = self.conns[k]
        try:
            while True:
                rows = self.method.take(conn)
                if rows:
                    self.taken[k].extend(r[1] for r in rows)
                    self.batches[k] += 1
                    continue
                self.empty_polls[k] += 1
                if self.stopping.is_set() and self.method.left(conn) == 0:
                    break
                time.sleep(0.001)
        except Exception as e:  # reported by the measurement
            self.errors.append(f"consumer {k}: {e}")
        self.t_end[k] = now()

    def join(self, timeout):
        deadline = now() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - now()))
        for c in self.conns:
            c.close()
        return not any(t.is_alive() for t in self.threads)

    def all_taken(self):
        return [x for t in self.taken for x in t]


def parse_args(command, argv, *extra):
    """The options of every command, and extra ones: (name, type, default)."""
    import argparse
    ap = argparse.ArgumentParser(prog=f"queue_load.py {command}")
    ap.add_argument("--db", required=True)
    ap.add_argument("--method", required=True, choices=("pop", "read_ack", "pgmq"))
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=300)
    for name, type_, default in extra:
        ap.add_argument(name, type=type_, default=default)
    return ap.parse_args(argv)


def exactness(res, taken, want):
    got = len(taken)
    distinct = len(set(taken))
    res["consumed"] = got
    res["twice"] = got - distinct
    res["missing"] = len(want - set(taken))
    res["exact"] = got == distinct == len(want) and res["missing"] == 0


def cmd_drain(argv):
    a = parse_args("drain", argv, ("--events", int, 100000), ("--label", str, "drain"))
    m = Method(a.method, a.batch)
    ctl = connect(a.db)
    m.empty(ctl)
    ctl.execute(f"VACUUM {m.table}")
    m.fill(ctl, 1, a.events)
    ctl.execute(f"ANALYZE {m.table}")
    ctl.execute(f"SELECT count(*) FROM {m.table}")      # hint bits, as for any table at rest
    ctl.execute("CHECKPOINT")
    time.sleep(1.0)                                     # statistics flushed
    res = {"kind": "drain", "label": a.label, "method": a.method, "events": a.events,
           "consumers": a.consumers, "batch": a.batch}
    res["filled"] = table_state(ctl, m.table)
    cs = Consumers(a.db, m, a.consumers)
    cs.stopping.set()               # drain to empty
    t0 = now()
    cs.start()
    finished = cs.join(a.timeout)
    t1 = max((t for t in cs.t_end if t is not None), default=now())
    res["complete"] = finished and not cs.errors
    res["seconds"] = t1 - t0
    res["rate"] = a.events / res["seconds"] if res["seconds"] else None
    res["batches"] = sum(cs.batches)
    res["empty_polls"] = sum(cs.empty_polls)
    res["errors"] = cs.errors
    exactness(res, cs.all_taken(), set(range(1, a.events + 1)))
    time.sleep(1.0)                 # the consumers' statistics reach the shared ones
    res["drained"] = table_state(ctl, m.table)
    ctl.execute(f"VACUUM {m.table}")
    res["vacuumed"] = table_state(ctl, m.table)
    ctl.close()
    print(json.dumps(res), flush=True)
    d = res["drained"]
    print(f"{a.method}: {a.events} events in {res['seconds']:.2f} s ({res['rate']:,.0f} events/s), "
          f"{res['batches']} batches, exact {res['exact']}; after the drain {d['total_bytes'] / 1e6:.1f} MB, "
          f"{d['dead_tuples']} dead, {d['hot_updated']} of {d['updated']} updates HOT"
          + ("" if res["complete"] else " INCOMPLETE " + "; ".join(cs.errors)), file=sys.stderr, flush=True)
    return 0


def cmd_sustain(argv):
    a = parse_args("sustain", argv, ("--seconds", float, 600), ("--rate", float, 5000))
    m = Method(a.method, a.batch)
    ctl = connect(a.db)
    m.empty(ctl)
    ctl.execute(f"VACUUM {m.table}")
    res = {"kind": "sustain", "method": a.method, "rate_target": a.rate, "seconds_target": a.seconds,
           "consumers": a.consumers, "batch": a.batch}
    res["start"] = table_state(ctl, m.table)
    produced = [0]
    perr = []
    stop = threading.Event()

    def producer():
        try:
            conn = connect(a.db)
            per = max(1, int(a.rate * 0.1))
            for _ in paced(0.1, stop):
                m.fill(conn, produced[0] + 1, produced[0] + per)
                produced[0] += per
            conn.close()
        except Exception as e:  # reported below
            perr.append(f"producer: {e}")

    cs = Consumers(a.db, m, a.consumers)
    pt = threading.Thread(target=producer, daemon=True)
    t0 = now()
    pt.start()
    cs.start()
    samples = []
    while now() - t0 < a.seconds:
        time.sleep(min(max(a.seconds / 10, 1.0), max(0.0, a.seconds - (now() - t0))))
        st = table_state(ctl, m.table)
        st["t"] = round(now() - t0, 1)
        st["produced"] = produced[0]
        st["consumed"] = sum(len(t) for t in cs.taken)
        samples.append(st)
    stop.set()
    pt.join(30)
    t_load = now() - t0
    cs.stopping.set()
    finished = cs.join(a.timeout)
    n = produced[0]
    res["events"] = n
    res["rate_achieved"] = n / t_load
    res["consumed_rate"] = sum(len(t) for t in cs.taken) / (now() - t0)
    res["complete"] = finished and not cs.errors and not perr
    res["errors"] = cs.errors + perr
    res["max_backlog"] = max((s["produced"] - s["consumed"] for s in samples), default=None)
    exactness(res, cs.all_taken(), set(range(1, n + 1)))
    time.sleep(1.0)
    res["samples"] = samples
    res["end"] = table_state(ctl, m.table)
    ctl.execute(f"VACUUM {m.table}")
    res["vacuumed"] = table_state(ctl, m.table)
    ctl.close()
    print(json.dumps(res), flush=True)
    first = samples[0] if samples else res["start"]
    print(f"{a.method} sustained: {n} events at {res['rate_achieved']:,.0f}/s for {t_load:.0f} s, max backlog "
          f"{res['max_backlog']}, exact {res['exact']}; size {first['total_bytes'] / 1e6:.1f} MB after "
          f"{first.get('t', 0)} s, {res['end']['total_bytes'] / 1e6:.1f} MB at the end "
          f"({res['end']['dead_tuples']} dead, {res['end']['autovacuums']} autovacuums)"
          + ("" if res["complete"] else " INCOMPLETE " + "; ".join(res["errors"])), file=sys.stderr, flush=True)
    return 0


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def peak(samples):
    """The largest size (heap + indexes) among samples."""
    return max(x["total_bytes"] for x in samples)


def mb(b):
    return f"{b / 1e6:.2f}" if b is not None else "n/a"


TITLES = {"pop": "`notifier.pop(ch, {b})`", "read_ack": "`notifier.read(ch, '30 s', {b})` + `notifier.ack(ids)`",
          "pgmq": "pgmq {v} `pgmq.read(q, 30, {b})` + `pgmq.delete(q, ids)`"}


def cmd_report(results_path, meta_path):
    meta = json.load(open(meta_path))
    runs, errors = [], []
    for line in open(results_path):
        if line.strip():
            r = json.loads(line)
            (errors if "error" in r else runs).append(r)
    lines = []
    p = lines.append

    def title(mth):
        return TITLES[mth].format(b=meta["batch"], v=meta.get("pgmq_version") or "")

    drains = [r for r in runs if r["kind"] == "drain" and r.get("label") == "drain"]
    methods = [x for x in ("pop", "read_ack", "pgmq") if any(r["method"] == x for r in drains)]
    p("## Queue consumption: notifier.pop(), notifier.read() + ack(), pgmq")
    p("")
    p(f"{meta['date']} · nproc {meta['nproc']} · {meta['pg_version']} · pg_notifier {meta['rev']} · "
      f"{meta['runs']} rounds, median reported · machine: {meta['background']}")
    p("")
    p(f"One throw-away cluster (fsync=off, synchronous_commit=off, autovacuum on).  Each drain: the queue "
      f"emptied and VACUUMed, filled with {meta['events']:,} event-like JSON payloads (notifier.queue: "
      "INSERT as the worker's queue sink does; pgmq: `pgmq.send_batch`), ANALYZE, CHECKPOINT; then "
      f"{meta['consumers']} consumers (one autocommit connection each) take batches of {meta['batch']} until "
      "the queue is empty; events/s = N ÷ the median of the rounds' seconds (start → the last consumer found "
      "it empty).  Every event consumed exactly once is checked.")
    p("")
    rates = {}
    p("| method | events | seconds | events/s | vs pgmq | exactly once |")
    p("| --- | ---: | ---: | ---: | ---: | --- |")
    for mth in methods:
        rs = [r for r in drains if r["method"] == mth]
        secs = med([r["seconds"] for r in rs if r.get("complete")])
        rates[mth] = rs[0]["events"] / secs if secs and all(r.get("complete") for r in rs) else None
    for mth in methods:
        rs = [r for r in drains if r["method"] == mth]
        rate = rates[mth]
        vs = f"{rate / rates['pgmq']:.2f}×" if rate and rates.get("pgmq") else "n/a"
        p(f"| {title(mth)} | {rs[0]['events']:,} | {med([r['seconds'] for r in rs]):.2f} | "
          f"{f'{rate:,.0f}' if rate else 'incomplete'} | {vs} | "
          f"{'yes' if all(r.get('exact') for r in rs) else 'NO'} |")
    p("")
    p("### Targets (issue 18)")
    p("")
    p("| target | measured | baseline (same run) | ratio | met / not met |")
    p("| --- | --- | --- | --- | --- |")
    met = 0
    total = 0
    base = f"{rates['pgmq']:,.0f}/s" if rates.get("pgmq") else "not measured"
    for mth in ("pop", "read_ack"):
        if mth not in rates:
            continue
        total += 1
        r_ = rates[mth] / rates["pgmq"] if rates.get(mth) and rates.get("pgmq") else None
        ok = r_ is not None and r_ >= 1.0
        met += ok
        p(f"| {title(mth)} ≥ pgmq's rate | {f'{rates[mth]:,.0f}/s' if rates[mth] else 'n/a'} | "
          f"pgmq {base} | "
          f"{f'{r_:.2f}×' if r_ else 'n/a'} | {'met' if ok else 'not met'} |")
    sus = [r for r in runs if r["kind"] == "sustain"]
    pgmq_peak = max((peak(r["samples"]) for r in sus if r["method"] == "pgmq" and r.get("samples")), default=None)
    for r in sus:
        if r["method"] == "pgmq" or not r.get("samples"):
            continue
        total += 1
        half = len(r["samples"]) // 2
        first, second = peak(r["samples"][:half]), peak(r["samples"][half:])
        grow = second / first if first else None
        ok = r.get("complete") and grow is not None and grow <= 1.25
        met += ok
        vs = f"; peak {second / pgmq_peak:.2f}× pgmq's ({mb(pgmq_peak)} MB)" if pgmq_peak else ""
        p(f"| no bloat during a {r['seconds_target']:.0f} s drain ({title(r['method'])}): the table stops growing, "
          f"its peak size in the second half ≤ 1.25× its peak in the first | {mb(second)} MB | "
          f"{mb(first)} MB{vs} | {f'{grow:.2f}×' if grow else 'n/a'} | {'met' if ok else 'not met'} |")
    p("")
    p(f"{met} of {total} targets met.  Reported, never enforced.")
    p("")
    p("### The tables after a drain (median round)")
    p("")
    p("Size (heap + indexes) filled, right after the drain and after a VACUUM; dead tuples right after the "
      "drain (`pg_stat_user_tables`, statistics of the consumers flushed); HOT = updates that touched no "
      "index (read() and pgmq.read() update each message once).")
    p("")
    p("| method | filled MB | drained MB | dead tuples | updates (HOT) | after VACUUM MB | autovacuums |")
    p("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for mth in methods:
        rs = [r for r in drains if r["method"] == mth]
        r = sorted(rs, key=lambda x: x.get("seconds") or 0)[len(rs) // 2]
        f, d, v = r["filled"], r["drained"], r["vacuumed"]
        upd = d["updated"] - f["updated"]
        hot = d["hot_updated"] - f["hot_updated"]
        p(f"| {title(mth)} | {mb(f['total_bytes'])} | {mb(d['total_bytes'])} | {d['dead_tuples']:,} | "
          f"{upd:,} ({hot:,} HOT) | {mb(v['total_bytes'])} | {d['autovacuums'] - f['autovacuums']} |")
    p("")
    if sus:
        p("### Sustained drain")
        p("")
        p("A producer adds events every 100 ms (one statement per tick) at the rate below while the consumers "
          "drain; autovacuum on.  Size and dead tuples sampled every tenth of the run.")
        p("")
        p("| method | seconds | produced/s | consumed/s | max backlog | exactly once | size MB over time | "
          "dead tuples at the end | autovacuums | after VACUUM MB |")
        p("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |")
        for r in sus:
            over = " → ".join(mb(s["total_bytes"]) for s in r.get("samples") or [])
            p(f"| {title(r['method'])} | {r['seconds_target']:.0f} | {r['rate_achieved']:,.0f} | "
              f"{r['consumed_rate']:,.0f} | {r.get('max_backlog') or 0:,} | {'yes' if r.get('exact') else 'NO'} | "
              f"{over} | {r['end']['dead_tuples']:,} | {r['end']['autovacuums'] - r['start']['autovacuums']} | "
              f"{mb(r['vacuumed']['total_bytes'])} |")
        p("")
    if errors or meta.get("crashes"):
        p("Errors:")
        for e in errors:
            p(f"- {e.get('kind')} {e.get('method')}: {e['error']}")
        if meta.get("crashes"):
            p(f"- server log lines about crashed processes: {meta['crashes']}")
        p("")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


COMMANDS = {"drain": lambda args: cmd_drain(args), "sustain": lambda args: cmd_sustain(args),
            "report": lambda args: cmd_report(*args)}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
