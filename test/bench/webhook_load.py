#!/usr/bin/python3
"""test/bench/webhook_load.py -- the measuring half of test/bench/webhook.

Run with Debian's /usr/bin/python3 (psycopg 3).  Connection parameters come
from the environment (PGHOST, PGPORT, PGUSER) that test/lib/cluster.sh exports.

  webhook_load.py throughput [options]  one throughput measurement (bulk
                                        INSERT transactions into a table whose
                                        channel has a webhook route); prints
                                        one JSON line
  webhook_load.py latency [options]     one latency measurement (a paced
                                        producer, one single-row transaction
                                        per 1/rate s); prints one JSON line
  webhook_load.py post URL              one POST to URL (the nginx smoke test)
  webhook_load.py wrk WRK_OUT LUA       wrk's report as one JSON line
  webhook_load.py pgnet [options]       pg_net's throughput (a trigger calling
                                        net.http_post()); one JSON line
  webhook_load.py bloat [options]       throughput and notifier.deliveries'
                                        size and dead tuples before, during
                                        and after a held REPEATABLE READ
                                        snapshot; one JSON line
  webhook_load.py replay --db DB       the worker's delivery statements alone
                                        (claim, mark delivered) on a backlog;
                                        one JSON line per configuration
  webhook_load.py slowlog SERVER_LOG PIDS
                                        the worker's statements auto_explain
                                        logged, by statement and plan shape
  webhook_load.py profile PERF_DATA SO [RUN_JSON]
                                        where the worker's CPU went (perf
                                        script + addr2line); one JSON line
  webhook_load.py report RESULTS META   the Markdown report of results.jsonl

Clocks: throughput times are time.monotonic() of this process.  Latencies
are all server-side CLOCK_REALTIME: the commit timestamp of each event's
transaction (pg_xact_commit_timestamp(xmin) of its row; the cluster runs with
track_commit_timestamp = on) against received_at / delivered_at of the event's
row in notifier.deliveries (written by the worker, same machine, same clock).
The producer also asks the server for clock_timestamp() just before and just
after each COMMIT (same query string, one round trip): bounds for the check.

One measurement:
  1. reset: wait until no delivery is pending or in flight, empty the watched
     tables (in session_replication_role = replica: no truncate event) and
     notifier.deliveries, CHECKPOINT, wait for an empty NOTIFY queue;
  2. a sampler thread polls, every --poll seconds, the route's counters
     (notifier.route_stats(): written = rows into notifier.deliveries,
     delivered = 2xx answers; shared memory, cheap) and what the worker is
     doing (pg_stat_activity, /proc/PID/stat);
  3. the producer runs;
  4. done when the delivered counter reached N and then count(*) of the
     route's rows with status 'delivered' in notifier.deliveries is N (the
     table, not the counter, is the end of the measurement).
"""
import json
import math
import os
import statistics
import sys
import threading
import time

import psycopg

CLK_TCK = os.sysconf("SC_CLK_TCK")


def now():
    return time.monotonic()


def proc_cpu(pid):
    """CPU seconds (user + system, all threads) of a process; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (OSError, TypeError):
        return None
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return "?"
    return data[data.rindex(")") + 2:].split()[0]


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(d))
    return out


def tree_cpu(pid):
    """CPU seconds of a process and its children (nginx: master + workers)."""
    if not pid:
        return None
    total = 0.0
    for p in [pid] + children(pid):
        c = proc_cpu(p)
        if c is not None:
            total += c
    return total


def machine_cpu():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def connect(db, autocommit=True):
    return psycopg.connect(dbname=db, autocommit=autocommit,
                           application_name="bench webhook_load")


def percentile(sorted_values, q):
    """Nearest rank."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[k - 1]


def dist(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return {"n": len(v), "min": v[0], "p50": percentile(v, 0.5), "p90": percentile(v, 0.9),
            "p99": percentile(v, 0.99), "p999": percentile(v, 0.999), "max": v[-1],
            "mean": sum(v) / len(v)}


# ---------------------------------------------------------------------------
# shared by both measurements
# ---------------------------------------------------------------------------
def worker_pid(conn):
    row = conn.execute("SELECT pid, state FROM notifier.status() "
                       "WHERE database = current_database()").fetchone()
    return row[0] if row else None


def route_counters(conn, route_id):
    row = conn.execute("SELECT written, delivered, retried, dead, errors, last_http_status, "
                       "       latency_p50_ms, latency_p99_ms, last_error "
                       "  FROM notifier.route_stats() WHERE route_id = %s", (route_id,)).fetchone()
    keys = ("written", "delivered", "retried", "dead", "errors", "last_http_status",
            "latency_p50_ms", "latency_p99_ms", "last_error")
    return dict(zip(keys, row)) if row else dict.fromkeys(keys)


def reset(conn, tables, timeout=15.0, keep_deliveries=False):
    """Nothing open, watched tables and notifier.deliveries empty (unless
    keep_deliveries: the delivered rows of earlier measurements stay),
    CHECKPOINT, empty NOTIFY queue.  Returns how many open deliveries were
    thrown away (0 unless an earlier measurement did not finish)."""
    deadline = now() + timeout
    left = 0
    while True:
        left = conn.execute("SELECT count(*) FROM notifier.deliveries "
                            "WHERE status IN ('pending', 'in_flight')").fetchone()[0]
        if left == 0 or now() > deadline:
            break
        time.sleep(0.1)
    conn.execute("SET session_replication_role = replica")
    conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    conn.execute("RESET session_replication_role")
    # not RESTART IDENTITY: delivery ids stay unique over the whole run
    if not keep_deliveries:
        conn.execute("TRUNCATE notifier.deliveries")
    elif left:
        conn.execute("DELETE FROM notifier.deliveries WHERE status IN ('pending', 'in_flight')")
    conn.execute("CHECKPOINT")
    while conn.execute("SELECT pg_notification_queue_usage()").fetchone()[0] > 0.0001:
        if now() > deadline:
            raise RuntimeError("the NOTIFY queue did not empty within the reset timeout")
        time.sleep(0.1)
    return left


class Sampler(threading.Thread):
    """Polls the route's written / delivered counters and what the worker does;
    once delivered reached the target (or the counter has not moved for a
    second), checks the table itself."""

    def __init__(self, db, route_id, n, wpid, poll, timeout):
        super().__init__(daemon=True)
        self.conn = connect(db)
        self.route_id = route_id
        self.n = n
        self.wpid = wpid
        self.poll = poll
        self.timeout = timeout
        c = route_counters(self.conn, route_id)
        self.base_written = c["written"] or 0
        self.base_delivered = c["delivered"] or 0
        self.base_retried = c["retried"] or 0
        self.base_dead = c["dead"] or 0
        self.stop = threading.Event()
        self.t_start = None         # set by the producer: the clock starts
        self.t_first_written = None
        self.t_written = None       # all N rows in notifier.deliveries (counter)
        self.t_first_delivered = None
        self.t_counter = None       # delivered counter reached N
        self.t_done = None          # the table has N delivered rows
        self.written = 0
        self.delivered = 0
        self.table_delivered = None
        self.table_checks = 0
        self.series = []            # (t - t_start, written, delivered)
        self.samples = {}
        self.proc_states = {}
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the measurement
            self.error = f"sampler: {e}"

    def table_count(self):
        self.table_checks += 1
        return self.conn.execute(
            "SELECT count(*) FROM notifier.deliveries WHERE route_id = %s AND status = 'delivered'",
            (self.route_id,)).fetchone()[0]

    def _run(self):
        q = ("SELECT s.written, s.delivered, a.state, a.wait_event "
             "  FROM (SELECT 1) x "
             "  LEFT JOIN notifier.route_stats() s ON s.route_id = %s "
             "  LEFT JOIN pg_stat_activity a ON a.pid = %s")
        deadline = None
        last_change = None
        last_val = None
        last_check = 0.0
        while not self.stop.is_set():
            written, delivered, state, wevent = self.conn.execute(q, (self.route_id, self.wpid)).fetchone()
            t = now()
            if self.t_start is None:
                time.sleep(self.poll / 5)
                continue
            if deadline is None:
                deadline = self.t_start + self.timeout
                last_change = t
            rel = t - self.t_start
            self.written = (written or 0) - self.base_written
            self.delivered = (delivered or 0) - self.base_delivered
            self.series.append((round(rel, 4), self.written, self.delivered))
            key = f"{state or '?'}/{wevent or 'on CPU or no wait'}"
            self.samples[key] = self.samples.get(key, 0) + 1
            ps = proc_state(self.wpid)
            self.proc_states[ps] = self.proc_states.get(ps, 0) + 1
            if self.written > 0 and self.t_first_written is None:
                self.t_first_written = t
            if self.written >= self.n and self.t_written is None:
                self.t_written = t
            if self.delivered > 0 and self.t_first_delivered is None:
                self.t_first_delivered = t
            if self.delivered >= self.n and self.t_counter is None:
                self.t_counter = t
            if (self.written, self.delivered) != last_val:
                last_val = (self.written, self.delivered)
                last_change = t
            # the table: when the counter says done, or (fallback) when the
            # counters have not moved for a second
            if self.t_counter is not None or (t - last_change > 1.0 and t - last_check > 1.0):
                last_check = t
                self.table_delivered = self.table_count()
                if self.table_delivered >= self.n:
                    self.t_done = now()
                    return
            if t > deadline:
                return
            time.sleep(self.poll)


def deliveries_check(conn, route_id, n, min_id=0):
    """Every event exactly once and delivered at the first attempt?"""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), "
        "       count(*) FILTER (WHERE status = 'dead'), count(DISTINCT event_id), "
        "       coalesce(sum(attempts), 0), count(*) FILTER (WHERE last_http_status <> 200), "
        "       count(DISTINCT xmin::text) FILTER (WHERE status = 'delivered'), "
        "       count(DISTINCT received_at) "
        "  FROM notifier.deliveries WHERE route_id = %s AND id > %s", (route_id, min_id)).fetchone()
    keys = ("rows", "delivered_rows", "dead_rows", "distinct_event_ids", "attempts",
            "non_200", "delivered_xacts", "drains")
    return dict(zip(keys, row))


# ---------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------
def produce_bulk(db, table, txns, rows, sampler, keys=0):
    """txns transactions of rows new rows each; with keys, of rows distinct
    keys of 1..keys each, upserted (an INSERT event the first time, then
    UPDATE events): transaction i takes keys i*rows .. (i+1)*rows - 1
    modulo keys."""
    conn = connect(db, autocommit=False)
    bpid = conn.info.backend_pid
    if keys:
        sql = (f"INSERT INTO {table} (id, customer, status, total, note) "
               f"SELECT (g %% {int(keys)}) + 1, g %% 10000, (ARRAY['new','paid','shipped','cancelled'])[1 + g %% 4], "
               "       (g %% 100000) / 100.0, 'order note ' || g "
               "  FROM generate_series(%s::int - 1, %s::int - 1) g "
               "ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, status = EXCLUDED.status, "
               "  total = EXCLUDED.total, note = EXCLUDED.note")
    else:
        sql = (f"INSERT INTO {table} (customer, status, total, note) "
               "SELECT g %% 10000, (ARRAY['new','paid','shipped','cancelled'])[1 + g %% 4], "
               "       (g %% 100000) / 100.0, 'order note ' || g "
               "  FROM generate_series(%s::int, %s::int) g")
    cpu0 = proc_cpu(bpid)
    t0 = None
    for i in range(txns):
        conn.execute(sql, (i * rows + 1, (i + 1) * rows))
        if t0 is None:
            t0 = now()                     # the start of the first COMMIT
            sampler.t_start = t0
        conn.commit()
    t1 = now()
    cpu1 = proc_cpu(bpid)
    conn.close()
    return t0, t1, cpu1 - cpu0


def common_args(ap):
    ap.add_argument("--db", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--reset-tables", required=True, help="comma list of the watched tables")
    ap.add_argument("--route-id", type=int, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--nginx-pid", type=int, default=0)
    ap.add_argument("--postmaster-pid", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--poll", type=float, default=0.025)


def cmd_throughput(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="webhook_load.py throughput")
    common_args(ap)
    ap.add_argument("--txns", type=int, default=20)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--keys", type=int, default=0,
                    help="upsert rows distinct keys of this many per transaction (ordered => 'key')")
    a = ap.parse_args(argv)
    n = a.txns * a.rows
    res = {"kind": "throughput", "workload": a.label, "events": n, "route_id": a.route_id,
           "keys": a.keys or None}
    ctl = connect(a.db)
    res["thrown_away"] = reset(ctl, a.reset_tables.split(","))
    wpid = worker_pid(ctl)
    res["worker_pid"] = wpid
    sampler = Sampler(a.db, a.route_id, n, wpid, a.poll, a.timeout)
    sampler.start()
    wcpu0, ncpu0, m0 = proc_cpu(wpid), tree_cpu(a.nginx_pid), machine_cpu()
    ccpu0, me0 = tree_cpu(a.postmaster_pid), time.process_time()
    try:
        t0, t_produced, pcpu = produce_bulk(a.db, a.table, a.txns, a.rows, sampler, a.keys)
    except Exception:
        sampler.stop.set()
        raise
    sampler.join(a.timeout + 30)
    sampler.stop.set()
    t_end = now()
    wcpu1, ncpu1, m1 = proc_cpu(wpid), tree_cpu(a.nginx_pid), machine_cpu()
    ccpu1, me1 = tree_cpu(a.postmaster_pid), time.process_time()
    if sampler.error:
        raise RuntimeError(sampler.error)
    s = sampler
    res["producer_s"] = t_produced - t0
    res["complete"] = s.t_done is not None
    res["seconds"] = (s.t_done - t0) if s.t_done else None
    res["elapsed_s"] = t_end - t0
    res["written"] = s.written
    res["delivered_counter"] = s.delivered
    res["table_delivered"] = s.table_delivered
    res["written_s"] = (s.t_written - t0) if s.t_written else None
    res["first_written_s"] = (s.t_first_written - t0) if s.t_first_written else None
    res["first_delivered_s"] = (s.t_first_delivered - t0) if s.t_first_delivered else None
    res["counter_s"] = (s.t_counter - t0) if s.t_counter else None
    res["table_checks"] = s.table_checks
    res["worker_cpu"] = (wcpu1 - wcpu0) if wcpu0 is not None and wcpu1 is not None else None
    res["nginx_cpu"] = (ncpu1 - ncpu0) if ncpu0 is not None and ncpu1 is not None else None
    res["producer_backend_cpu"] = pcpu
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    res["machine_busy"] = busy / total if total else None
    # CPU of everything else on the machine: busy minus the cluster (all
    # its processes; the producer's backend exits before the end), nginx
    # and this process
    if ccpu0 is not None and ccpu1 is not None and res["nginx_cpu"] is not None:
        ours = (ccpu1 - ccpu0) + pcpu + res["nginx_cpu"] + (me1 - me0)
        res["others_cpu"] = max(busy / CLK_TCK - ours, 0.0)
        res["others_cores"] = res["others_cpu"] / res["elapsed_s"] if res["elapsed_s"] else None
    res["worker_samples"] = s.samples
    res["worker_proc_states"] = s.proc_states
    # steady delivery rate: from 10% to 90% of the events delivered (counter)
    t10 = next((t for t, w, d in s.series if d >= 0.1 * n), None)
    t90 = next((t for t, w, d in s.series if d >= 0.9 * n), None)
    res["steady_rate"] = (0.8 * n / (t90 - t10)) if t10 is not None and t90 and t90 > t10 else None
    res["series"] = s.series[:: max(1, len(s.series) // 200)]
    c = route_counters(ctl, a.route_id)
    res["retried"] = (c["retried"] or 0) - s.base_retried
    res["dead"] = (c["dead"] or 0) - s.base_dead
    res["stats_latency_p50_ms"] = c["latency_p50_ms"]
    res["stats_latency_p99_ms"] = c["latency_p99_ms"]
    res["last_http_status"] = c["last_http_status"]
    res["last_error"] = c["last_error"]
    res.update(deliveries_check(ctl, a.route_id, n))
    res["worker_pid_after"] = worker_pid(ctl)
    ctl.close()
    print(json.dumps(res), flush=True)
    sec = res["seconds"]
    print(f"producer {res['producer_s']:.2f} s, all written {fmt_s(res['written_s'])} s, "
          + (f"all delivered {sec:.2f} s ({n / sec:,.0f} events/s)" if sec else
             f"INCOMPLETE after {res['elapsed_s']:.0f} s: {s.delivered} of {n} delivered "
             f"(counter), {s.table_delivered} in the table")
          + (f", worker CPU {res['worker_cpu']:.2f} s" if res["worker_cpu"] is not None else ""),
          file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------
def cmd_latency(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="webhook_load.py latency")
    common_args(ap)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--history", action="store_true",
                    help="keep the delivered rows of earlier measurements in notifier.deliveries and "
                         "VACUUM ANALYZE it first (a table with a past, as autovacuum would leave it)")
    a = ap.parse_args(argv)
    n = int(a.rate * a.seconds)
    res = {"kind": "latency", "workload": a.label, "events": n, "route_id": a.route_id,
           "rate_target": a.rate}
    ctl = connect(a.db)
    res["thrown_away"] = reset(ctl, a.reset_tables.split(","), keep_deliveries=a.history)
    min_id = 0
    if a.history:
        ctl.execute("VACUUM ANALYZE notifier.deliveries")
        min_id, res["history_rows"] = ctl.execute(
            "SELECT coalesce(max(id), 0), count(*) FROM notifier.deliveries").fetchone()
        time.sleep(0.2)     # the worker's plans: invalidated by the ANALYZE
    wpid = worker_pid(ctl)
    res["worker_pid"] = wpid
    base = route_counters(ctl, a.route_id)

    prod = connect(a.db)
    bpid = prod.info.backend_pid
    pg = prod.pgconn
    # one round trip per event: the transaction, then the server's clock
    # right after its COMMIT (and one before it, for the commit's own cost)
    tmpl = (f"BEGIN; INSERT INTO {a.table} (id, customer, status, total, note) "
            "VALUES ({i}, {c}, 'new', {c} / 100.0, 'order note {i}') "
            "RETURNING extract(epoch FROM clock_timestamp())::float8; COMMIT; "
            "SELECT extract(epoch FROM clock_timestamp())::float8")
    before = [0.0] * n
    commits = [0.0] * n
    late = 0
    period = 1.0 / a.rate
    wcpu0, ncpu0, pcpu0, m0 = proc_cpu(wpid), tree_cpu(a.nginx_pid), proc_cpu(bpid), machine_cpu()
    ccpu0, me0 = tree_cpu(a.postmaster_pid), time.process_time()
    t0 = now()
    for i in range(n):
        due = t0 + i * period
        d = due - now()
        if d > 0:
            time.sleep(d)
        elif d < -period:
            late += 1
        pg.send_query(tmpl.format(i=i + 1, c=(i % 10000) + 1).encode())
        vals = []
        while True:
            r = pg.get_result()
            if r is None:
                break
            if r.status == psycopg.pq.ExecStatus.TUPLES_OK:
                vals.append(float(r.get_value(0, 0)))
            elif r.status != psycopg.pq.ExecStatus.COMMAND_OK:
                raise RuntimeError(f"producer: {r.error_message.decode(errors='replace')}")
        before[i], commits[i] = vals[0], vals[1]
    t_produced = now()
    pcpu1 = proc_cpu(bpid)
    res["producer_s"] = t_produced - t0
    res["rate_achieved"] = n / (t_produced - t0)
    res["late"] = late

    # wait until all are delivered (counter, then the table)
    deadline = now() + a.timeout
    done = None
    last = None
    while now() < deadline:
        c = route_counters(ctl, a.route_id)
        last = (c["delivered"] or 0) - (base["delivered"] or 0)
        if last >= n:
            cnt = ctl.execute("SELECT count(*) FROM notifier.deliveries "
                              "WHERE route_id = %s AND status = 'delivered' AND id > %s",
                              (a.route_id, min_id)).fetchone()[0]
            if cnt >= n:
                done = now()
                break
        time.sleep(a.poll)
    wcpu1, ncpu1, m1 = proc_cpu(wpid), tree_cpu(a.nginx_pid), machine_cpu()
    ccpu1, me1 = tree_cpu(a.postmaster_pid), time.process_time()
    t_m = now()
    res["complete"] = done is not None
    res["drain_after_producer_s"] = (done - t_produced) if done else None
    res["delivered_counter"] = last
    res["worker_cpu"] = (wcpu1 - wcpu0) if wcpu0 is not None and wcpu1 is not None else None
    res["nginx_cpu"] = (ncpu1 - ncpu0) if ncpu0 is not None and ncpu1 is not None else None
    res["producer_backend_cpu"] = (pcpu1 - pcpu0) if pcpu0 is not None and pcpu1 is not None else None
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    res["machine_busy"] = busy / total if total else None
    if ccpu0 is not None and ccpu1 is not None and res["nginx_cpu"] is not None:
        ours = (ccpu1 - ccpu0) + res["nginx_cpu"] + (me1 - me0)
        res["others_cpu"] = max(busy / CLK_TCK - ours, 0.0)
        res["others_cores"] = res["others_cpu"] / (t_m - t0)
    res["seconds"] = (done or now()) - t0

    # the commit time of each event's transaction (track_commit_timestamp)
    cts = dict(ctl.execute(
        f"SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM {a.table}").fetchall())
    rows = ctl.execute(
        "SELECT (payload->'key'->>'id')::bigint, extract(epoch FROM received_at)::float8, "
        "       extract(epoch FROM delivered_at)::float8, status, attempts "
        "  FROM notifier.deliveries WHERE route_id = %s AND id > %s", (a.route_id, min_id)).fetchall()
    by_key = {}
    dup = 0
    for k, rec, dlv, st, att in rows:
        if k in by_key:
            dup += 1
        by_key[k] = (rec, dlv, st, att)
    total_ms, worker_ms, drain_ms, commit_ms, upper_ms, lower_ms = [], [], [], [], [], []
    missing = 0
    no_cts = 0
    outside = 0
    for i in range(n):
        r = by_key.get(i + 1)
        ct = cts.get(i + 1)
        commit_ms.append(1000 * (commits[i] - before[i]))
        if ct is None:
            no_cts += 1
        elif not (before[i] - 1e-6 <= ct <= commits[i] + 1e-6):
            outside += 1
        if r is None or r[1] is None:
            missing += 1
            continue
        rec, dlv = r[0], r[1]
        upper_ms.append(1000 * (dlv - before[i]))
        lower_ms.append(1000 * (dlv - commits[i]))
        worker_ms.append(1000 * (dlv - rec))
        if ct is not None:
            total_ms.append(1000 * (dlv - ct))
            drain_ms.append(1000 * (rec - ct))
    res["no_commit_timestamp"] = no_cts
    res["commit_timestamp_outside_stamps"] = outside
    res["before_commit_to_delivered_ms"] = dist(upper_ms)
    res["after_commit_to_delivered_ms"] = dist(lower_ms)
    res["negative_after_commit"] = sum(1 for x in lower_ms if x < 0)
    res["missing"] = missing
    res["duplicate_keys"] = dup
    res["commit_to_delivered_ms"] = dist(total_ms)
    res["received_to_delivered_ms"] = dist(worker_ms)
    res["commit_to_received_ms"] = dist(drain_ms)
    res["commit_itself_ms"] = dist(commit_ms)
    res["negative_latencies"] = sum(1 for x in total_ms if x < 0)
    # the same, per second of the run: does it drift?
    per_s = {}
    for i in range(n):
        r = by_key.get(i + 1)
        if r is not None and r[1] is not None and cts.get(i + 1) is not None:
            per_s.setdefault(int(i * period), []).append(1000 * (r[1] - cts[i + 1]))
    res["p99_per_second_ms"] = [round(percentile(sorted(v), 0.99), 2) for _, v in sorted(per_s.items())]
    c = route_counters(ctl, a.route_id)
    res["retried"] = (c["retried"] or 0) - (base["retried"] or 0)
    res["dead"] = (c["dead"] or 0) - (base["dead"] or 0)
    res["stats_latency_p50_ms"] = c["latency_p50_ms"]
    res["stats_latency_p99_ms"] = c["latency_p99_ms"]
    res["last_http_status"] = c["last_http_status"]
    res["last_error"] = c["last_error"]
    res.update(deliveries_check(ctl, a.route_id, n, min_id))
    res["worker_pid_after"] = worker_pid(ctl)
    prod.close()
    ctl.close()
    print(json.dumps(res), flush=True)
    t = res["commit_to_delivered_ms"]
    print(f"{n} events at {res['rate_achieved']:,.0f}/s ({late} sent late), "
          + (f"commit → 2xx p50 {t['p50']:.2f} ms, p99 {t['p99']:.2f} ms, max {t['max']:.2f} ms"
             if t else "no latency")
          + ("" if res["complete"] else f", INCOMPLETE: {missing} not delivered")
          + (f", worker CPU {res['worker_cpu']:.2f} s" if res["worker_cpu"] is not None else ""),
          file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------------------
# wrk: the ceiling of HTTP on this nginx
# ---------------------------------------------------------------------------
def cmd_wrk(out_path, lua_path):
    """wrk's report (--latency) as one JSON line."""
    import re
    text = open(out_path).read()
    res = {"kind": "wrk", "workload": "wrk", "complete": True}
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", text)
    if m:
        unit = {"s": 1.0, "ms": 0.001, "m": 60.0}[m.group(3)]
        res["requests"], res["seconds"] = int(m.group(1)), float(m.group(2)) * unit
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:(.*)", text)
    res["socket_errors"] = m.group(1).strip() if m else None

    def ms(v, u):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
    for q in ("50", "99"):
        m = re.search(rf"^\s*{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        res[f"p{q}_ms"] = ms(m.group(1), m.group(2)) if m else None
    m = re.search(r"wrk\.body\s*=\s*'(.*)'", open(lua_path).read())
    res["body_bytes"] = len(m.group(1).encode()) if m else None
    if res["rps"] is None:
        res = {"workload": "wrk", "error": "no Requests/sec in wrk's output"}
    print(json.dumps(res), flush=True)
    return 0


# ---------------------------------------------------------------------------
# pg_net: the peer, as Supabase Database Webhooks use it
# ---------------------------------------------------------------------------
class _Clock:
    t_start = None


def cmd_pgnet(argv):
    """The same bulk producer into a table whose AFTER INSERT trigger calls
    net.http_post(); done when net._http_response holds N responses."""
    import argparse
    ap = argparse.ArgumentParser(prog="webhook_load.py pgnet")
    common_args(ap)
    ap.add_argument("--txns", type=int, default=4)
    ap.add_argument("--rows", type=int, default=500)
    a = ap.parse_args(argv)
    n = a.txns * a.rows
    res = {"kind": "pgnet", "workload": a.label, "events": n}
    ctl = connect(a.db)
    deadline = now() + 30
    while ctl.execute("SELECT count(*) FROM net.http_request_queue").fetchone()[0] and now() < deadline:
        time.sleep(0.1)
    ctl.execute("SET session_replication_role = replica")
    ctl.execute(f"TRUNCATE {a.table}")
    ctl.execute("RESET session_replication_role")
    ctl.execute("TRUNCATE net._http_response")
    ctl.execute("CHECKPOINT")
    pg_net_pid = ctl.execute("SELECT pid FROM pg_stat_activity WHERE backend_type ILIKE '%pg_net%' "
                             "OR application_name ILIKE '%pg_net%' LIMIT 1").fetchone()
    pg_net_pid = pg_net_pid[0] if pg_net_pid else None
    res["pg_net_pid"] = pg_net_pid
    cpu0, m0 = proc_cpu(pg_net_pid), machine_cpu()
    clock = _Clock()
    t0, t_produced, pcpu = produce_bulk(a.db, a.table, a.txns, a.rows, clock)
    deadline = now() + a.timeout
    got = 0
    done = None
    while now() < deadline:
        got = ctl.execute("SELECT count(*) FROM net._http_response").fetchone()[0]
        if got >= n:
            done = now()
            break
        time.sleep(a.poll)
    cpu1, m1 = proc_cpu(pg_net_pid), machine_cpu()
    res["complete"] = done is not None
    res["producer_s"] = t_produced - t0
    res["seconds"] = (done - t0) if done else None
    res["elapsed_s"] = now() - t0
    res["responses"] = got
    ok, errs, timed_out = ctl.execute(
        "SELECT count(*) FILTER (WHERE status_code BETWEEN 200 AND 299), "
        "       count(*) FILTER (WHERE error_msg IS NOT NULL), count(*) FILTER (WHERE timed_out) "
        "  FROM net._http_response").fetchone()
    res["responses_2xx"], res["errors"], res["timed_out"] = ok, errs, timed_out
    res["pg_net_cpu"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    res["machine_busy"] = busy / total if total else None
    res["producer_backend_cpu"] = pcpu
    ctl.close()
    print(json.dumps(res), flush=True)
    print(f"pg_net: {got} of {n} responses ({ok} 2xx) "
          + (f"in {res['seconds']:.2f} s ({n / res['seconds']:,.0f} events/s)" if done else
             f"INCOMPLETE after {res['elapsed_s']:.0f} s ({got / res['elapsed_s']:,.0f} events/s)"),
          file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------------------
# held xmin: throughput and bloat while a snapshot is held
# ---------------------------------------------------------------------------
def paced(period, stop, seconds=None):
    """Yields 0, 1, 2... on an absolute schedule, one every period seconds
    (a late one at once), until stop is set or after seconds."""
    t_start = now()
    i = 0
    while not stop.is_set():
        due = t_start + i * period
        if seconds is not None and due >= t_start + seconds:
            return
        d = due - now()
        if d > 0:
            time.sleep(d)
        yield i
        i += 1


def table_state(conn):
    """notifier.deliveries: sizes, tuples (statistics: as last reported)."""
    row = conn.execute(
        "SELECT pg_relation_size('notifier.deliveries'), pg_indexes_size('notifier.deliveries'), "
        "       pg_total_relation_size('notifier.deliveries'), coalesce(s.n_live_tup, 0), "
        "       coalesce(s.n_dead_tup, 0), (SELECT count(*) FROM notifier.deliveries) "
        "  FROM pg_stat_user_tables s WHERE s.relid = 'notifier.deliveries'::regclass").fetchone()
    keys = ("heap_bytes", "index_bytes", "total_bytes", "live_tuples_stat", "dead_tuples", "rows")
    return dict(zip(keys, row))


def cmd_bloat(argv):
    """A paced producer (--producers connections, single-row autocommit
    INSERTs) at --rate for --before s, then --hold s while another
    connection holds a REPEATABLE READ snapshot, then --after s.  Per phase:
    events delivered (the route's counter), notifier.deliveries' sizes and
    dead tuples at its end; at the end, the same after all were delivered
    and after a VACUUM."""
    import argparse
    ap = argparse.ArgumentParser(prog="webhook_load.py bloat")
    common_args(ap)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--before", type=float, default=30)
    ap.add_argument("--hold", type=float, default=120)
    ap.add_argument("--after", type=float, default=30)
    ap.add_argument("--producers", type=int, default=2)
    a = ap.parse_args(argv)
    total_s = a.before + a.hold + a.after
    res = {"kind": "bloat", "workload": a.label, "rate_target": a.rate, "route_id": a.route_id,
           "before_s": a.before, "hold_s": a.hold, "after_s": a.after, "producers": a.producers}
    ctl = connect(a.db)
    res["thrown_away"] = reset(ctl, a.reset_tables.split(","))
    wpid = worker_pid(ctl)
    res["worker_pid"] = wpid
    base = route_counters(ctl, a.route_id)
    produced = [0] * a.producers
    errors = []
    stop = threading.Event()

    def producer(k):
        try:
            conn = connect(a.db)
            for _ in paced(a.producers / a.rate, stop, total_s):
                conn.execute(f"INSERT INTO {a.table} (customer, status, total, note) "
                             "VALUES (%s, 'new', 1.5, 'held xmin')", (k,))
                produced[k] += 1
            conn.close()
        except Exception as e:  # reported below
            errors.append(f"producer {k}: {e}")

    def counters():
        c = route_counters(ctl, a.route_id)
        return ((c["written"] or 0) - (base["written"] or 0),
                (c["delivered"] or 0) - (base["delivered"] or 0))

    phases = []
    holder = None
    threads = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(a.producers)]
    t0 = now()
    for t in threads:
        t.start()
    marks = (("before", a.before), ("held", a.before + a.hold), ("after", total_s))
    last_t, last_w, last_d, last_p = t0, 0, 0, 0
    series = []
    for name, end in marks:
        while now() < t0 + end:
            time.sleep(min(1.0, max(0.0, t0 + end - now())))
            w, d = counters()
            series.append((round(now() - t0, 1), sum(produced), w, d))
        w, d = counters()
        t = now()
        p = sum(produced)
        ph = {"phase": name, "seconds": t - last_t, "produced": p - last_p, "delivered": d - last_d,
              "backlog_end": p - d, "written_backlog_end": w - d}
        ph["produced_per_s"] = ph["produced"] / ph["seconds"]
        ph["delivered_per_s"] = ph["delivered"] / ph["seconds"]
        ph.update(table_state(ctl))
        if holder is not None:
            ph["held_xmin_age"] = ctl.execute(
                "SELECT age(backend_xmin) FROM pg_stat_activity WHERE pid = %s",
                (holder.info.backend_pid,)).fetchone()[0]
        phases.append(ph)
        last_t, last_w, last_d, last_p = t, w, d, p
        if name == "before":
            holder = connect(a.db, autocommit=False)
            holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT count(*) FROM notifier.routes").fetchone()   # the snapshot
            res["holder_xmin"] = ctl.execute("SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = %s",
                                             (holder.info.backend_pid,)).fetchone()[0]
        elif name == "held":
            holder.commit()
            holder.close()
            holder = None
    stop.set()
    for t in threads:
        t.join(10)
    n = sum(produced)
    res["events"] = n
    res["rate_achieved"] = n / (now() - t0)
    deadline = now() + a.timeout
    done = None
    while now() < deadline:
        w, d = counters()
        if d >= n:
            done = now()
            break
        time.sleep(a.poll)
    res["complete"] = done is not None and not errors
    res["drain_after_load_s"] = (done - t0 - total_s) if done else None
    time.sleep(1.0)     # the worker's statistics reach the shared ones within a second
    end = {"phase": "all delivered"}
    end.update(table_state(ctl))
    phases.append(end)
    ctl.execute("VACUUM notifier.deliveries")
    time.sleep(0.5)
    vac = {"phase": "after VACUUM"}
    vac.update(table_state(ctl))
    phases.append(vac)
    res["phases"] = phases
    res["series"] = series[:: max(1, len(series) // 200)]
    res["errors"] = errors
    res.update(deliveries_check(ctl, a.route_id, n))
    res["worker_pid_after"] = worker_pid(ctl)
    ctl.close()
    print(json.dumps(res), flush=True)
    b, h = phases[0], phases[1]
    print(f"held xmin: delivered {b['delivered_per_s']:,.0f}/s before, {h['delivered_per_s']:,.0f}/s held "
          f"({h['delivered_per_s'] / b['delivered_per_s']:.2f}×, produced {h['produced_per_s']:,.0f}/s); "
          f"notifier.deliveries {h['total_bytes'] / 1e6:.1f} MB with {h['dead_tuples']:,} dead at the end of the "
          f"hold, {vac['total_bytes'] / 1e6:.1f} MB with {vac['dead_tuples']:,} dead after VACUUM"
          + ("" if res["complete"] else " INCOMPLETE") + ("; " + "; ".join(errors) if errors else ""),
          file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------------------
# replay: the worker's delivery statements alone (no HTTP)
# ---------------------------------------------------------------------------
def worker_statements(so_path):
    """The SQL the worker runs on notifier.deliveries, read from the
    pg_notifier.so the cluster loaded (string literals in .rodata): the
    claim of an unordered route and the outcome UPDATE."""
    import re
    data = open(so_path, "rb").read()
    texts = [t.decode() for t in re.findall(rb"[\x20-\x7e]{40,}", data)]
    claim = [t for t in texts if t.startswith("UPDATE notifier.deliveries") and "'in_flight'" in t
             and "SKIP LOCKED" in t and "RETURNING" in t]
    outcome = [t for t in texts if t.startswith("UPDATE notifier.deliveries") and "status = 'in_flight'" in t
               and "= ANY ($1)" in t]
    claim = claim or [t for t in texts if "status = 'in_flight'" in t and "SKIP LOCKED" in t]
    return (claim[0] if claim else None), (outcome[0] if outcome else None)


def cmd_replay(argv):
    """The worker's per-event SQL without HTTP, on a backlog of pending rows
    of a route that does not exist (the worker never touches them): the
    statements are read from the loaded pg_notifier.so and PREPAREd (with the
    argument types of delivery.c), so their plans come from the plan cache
    as the worker's kept SPI plans do (custom plans first, a generic one
    when the cache finds it cheaper); a DO block runs the loop server-side:
    claim `concurrency x batch` rows (one transaction), mark them delivered
    with one UPDATE per request of `batch` rows (one transaction).  Prints
    one JSON line per configuration."""
    import argparse
    ap = argparse.ArgumentParser(prog="webhook_load.py replay")
    ap.add_argument("--db", required=True)
    ap.add_argument("--so", required=True, help="the pg_notifier.so the cluster runs")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--configs", default="1000:1:no,50000:1:no,100000:1:no,100000:1:yes,100000:100:no",
                    help="backlog:batch_size:analyzed,...")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--payload", default=None, help="a sample event (JSON text)")
    a = ap.parse_args(argv)
    claim_sql, outcome_sql = worker_statements(a.so)
    if not claim_sql or not outcome_sql:
        raise RuntimeError(f"the claim / outcome statements are not in {a.so} "
                           f"(claim found: {bool(claim_sql)}, outcome found: {bool(outcome_sql)})")
    payload = a.payload or json.dumps({"id": "0.1", "op": "INSERT", "ts": "2026-01-01T00:00:00+00:00",
                                       "key": {"id": 1}, "row": {"id": 1, "note": "order note 1",
                                                                 "total": 0.01, "status": "paid",
                                                                 "customer": 1}, "xid": "0",
                                       "table": "orders", "schema": "public"})
    route = -1
    for cfg in a.configs.split(","):
        backlog, batch, analyzed = cfg.split(":")
        backlog, batch, analyzed = int(backlog), int(batch), analyzed == "yes"
        want = a.concurrency * batch
        conn = connect(a.db)
        conn.execute("TRUNCATE notifier.deliveries")
        conn.execute("INSERT INTO notifier.deliveries (route_id, event_id, payload) "
                     "SELECT %s, '0.' || g, %s::json FROM generate_series(1, %s) g",
                     (route, payload, backlog))
        if analyzed:
            conn.execute("ANALYZE notifier.deliveries")
        conn.close()
        conn = connect(a.db)        # a fresh plan cache
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        # the argument types of delivery.c: claim (int8, int4), outcome
        # (int8[], text, int4, text, int8, int4)
        conn.execute(f"PREPARE claim(bigint, integer) AS {claim_sql}")
        conn.execute(f"PREPARE outcome(bigint[], text, integer, text, bigint, integer) AS {outcome_sql}")
        do = f"""
DO $do$
DECLARE
    ids bigint[];
    batch bigint[];
    rec record;
    t0 timestamptz;
    t_claim float8 := 0;
    t_outcome float8 := 0;
    claims int := 0;
    events int := 0;
    requests int := 0;
    deadline timestamptz := clock_timestamp() + interval '{a.seconds} seconds';
BEGIN
    LOOP
        t0 := clock_timestamp();
        ids := '{{}}';
        FOR rec IN EXECUTE 'EXECUTE claim({route}, {want})' LOOP
            ids := ids || rec.id;
        END LOOP;
        COMMIT;
        t_claim := t_claim + extract(epoch FROM clock_timestamp() - t0);
        claims := claims + 1;
        EXIT WHEN cardinality(ids) = 0;
        t0 := clock_timestamp();
        FOR i IN 0 .. (cardinality(ids) - 1) / {batch} LOOP
            batch := ids[i * {batch} + 1 : i * {batch} + {batch}];
            EXECUTE format('EXECUTE outcome(%L::bigint[], %L, 200, NULL, 0, 10)', batch, 'delivered');
            requests := requests + 1;
        END LOOP;
        COMMIT;
        t_outcome := t_outcome + extract(epoch FROM clock_timestamp() - t0);
        events := events + cardinality(ids);
        EXIT WHEN clock_timestamp() > deadline;
    END LOOP;
    RAISE NOTICE '%', json_build_object('claims', claims, 'events', events, 'requests', requests,
                                        'claim_s', t_claim, 'outcome_s', t_outcome);
END
$do$"""
        t0 = now()
        conn.execute(do)
        wall = now() - t0
        res = json.loads(notices[-1]) if notices else {}
        # the claim's plan as the cache runs it now
        try:
            conn.execute("BEGIN")
            plan = [r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF) EXECUTE claim({route}, {want})")]
            conn.execute("ROLLBACK")
        except psycopg.Error as e:
            conn.execute("ROLLBACK")
            plan = [f"(EXPLAIN failed: {e})"]
        scan = [l.strip().lstrip("-> ").strip() for l in plan
                if "Scan" in l and "CTE Scan" not in l and "deliveries d" not in l]
        sort = any("Sort" in l and "Sort Key" not in l for l in plan)
        res.update({"backlog": backlog, "batch_size": batch, "analyzed": analyzed,
                    "concurrency": a.concurrency, "wall_s": wall,
                    "claim_scan": (scan[0] if scan else "?") + (" + Sort" if sort else ""),
                    "plan": plan})
        conn.execute("TRUNCATE notifier.deliveries")
        conn.close()
        print(json.dumps(res), flush=True)
        ev = res.get("events") or 0
        print(f"   backlog {backlog:,}, batch_size {batch}, {'analyzed' if analyzed else 'no statistics'}: "
              f"{ev} events, claim {1e6 * res.get('claim_s', 0) / max(ev, 1):.0f} µs/event, mark delivered "
              f"{1e6 * res.get('outcome_s', 0) / max(ev, 1):.0f} µs/event; claim plan: {res['claim_scan']}",
              file=sys.stderr, flush=True)
    print(json.dumps({"statements": {"claim": claim_sql, "outcome": outcome_sql}}), flush=True)
    return 0


# ---------------------------------------------------------------------------
# profile: where the worker's CPU goes, from a perf recording
# ---------------------------------------------------------------------------
def cmd_profile(perf_data, so_path, run_json=None):
    """Reads perf.data (perf record -g -p WORKER) and prints one JSON line:
    the share of samples per place in pg_notifier.so (the innermost frame of
    the extension on the stack, inlined static functions resolved with
    addr2line, e.g. "record_outcomes < delivery_work"), each split by what
    PostgreSQL was doing under it (planning, executing, commit...), plus the
    hottest functions (self) and the shares per shared object."""
    import collections
    import re
    import subprocess

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace").stdout

    out = {"samples": 0}
    try:
        r = [l for l in open(run_json).read().splitlines() if l.startswith("{")] if run_json else []
        if r:
            rr = json.loads(r[-1])
            out["events"], out["worker_cpu"], out["label"] = rr.get("events"), rr.get("worker_cpu"), rr.get("workload")
    except OSError:
        pass
    samples, cur = [], []
    # callchain lines: "ADDR SYM+0xOFF (DSO)"; ADDR is relative to the DSO
    # (its file address), even when perf cannot name the symbol (a .so
    # replaced on disk since: "(... (deleted))")
    frame = re.compile(r"([0-9a-f]+) (\S+?)(?:\+0x([0-9a-f]+))? \((.*)\)$")
    for line in run(["perf", "script", "-i", perf_data, "-F", "ip,sym,symoff,dso"]).splitlines():
        line = line.strip()
        if not line:
            if cur:
                samples.append(cur)
                cur = []
            continue
        m = frame.match(line)
        if m:
            cur.append((m.group(2), int(m.group(1), 16), m.group(4)))
    if cur:
        samples.append(cur)
    so_name = "pg_notifier.so"
    addrs = sorted({ip - 1 for smp in samples for sym, ip, dso in smp if so_name in dso})
    inline = {}
    for i in range(0, len(addrs), 2000):
        cura = None
        for l in run(["addr2line", "-a", "-f", "-i", "-e", so_path] + [hex(a) for a in addrs[i:i + 2000]]).splitlines():
            if l.startswith("0x"):
                cura = int(l, 16)
                inline[cura] = []
            elif cura is not None:
                inline[cura].append(l)

    def place(ip):
        r = inline.get(ip - 1, [])
        chain = []
        for i in range(0, len(r) - 1, 2):
            chain.append((r[i], r[i + 1].split("/")[-1].split(" ")[0]))
        if not chain or chain[0][0] == "??":
            return "[unknown]", None
        return " < ".join(f for f, _ in chain[:2]), chain[0][1]

    def kind(smp):
        names = {x[0] for x in smp}
        if "pg_plan_queries" in names:
            return "planning"
        if "standard_ExecutorRun" in names or "ExecutorRun" in names:
            return "executing"
        if "standard_ExecutorStart" in names or "standard_ExecutorEnd" in names or "ExecutorFinish" in names:
            return "executor start/end"
        if "CommitTransactionCommand" in names or "StartTransactionCommand" in names:
            return "transaction start/commit"
        if any(d.endswith(("libcurl.so.4", "libcurl.so.4.8.0")) or "libcurl" in d for _, _, d in smp):
            return "libcurl"
        if any(d == "[kernel.kallsyms]" for _, _, d in smp):
            return "kernel"
        return "other"

    sites = collections.Counter()
    site_kinds = collections.defaultdict(collections.Counter)
    site_lines = collections.defaultdict(collections.Counter)
    kinds = collections.Counter()
    for smp in samples:
        label, line = "(no pg_notifier frame: libcurl, kernel, unwinding lost)", None
        for sym, ip, dso in smp:
            if so_name in dso:
                label, line = place(ip)
                break
        k = kind(smp)
        sites[label] += 1
        site_kinds[label][k] += 1
        if line:
            site_lines[label][line] += 1
        kinds[k] += 1
    n = len(samples) or 1
    out["samples"] = len(samples)
    out["sites"] = [{"site": s_, "pct": 100 * v / n,
                     "kinds": {k: 100 * c / n for k, c in site_kinds[s_].most_common()},
                     "lines": [(l, 100 * c / n) for l, c in site_lines[s_].most_common(4)]}
                    for s_, v in sites.most_common(12)]
    out["kinds"] = {k: 100 * v / n for k, v in kinds.most_common()}

    def top(text, k, want_cols):
        res = []
        for line in text.splitlines():
            f = line.split()
            if line.startswith("#") or len(f) < 2 or not f[0].endswith("%"):
                continue
            if want_cols == "symbol" and len(f) >= 3 and f[1] in ("[.]", "[k]"):
                res.append((f[2], float(f[0][:-1])))
            elif want_cols == "dso":
                res.append((f[1], float(f[0][:-1])))
            if len(res) >= k:
                break
        return res
    out["self"] = top(run(["perf", "report", "-i", perf_data, "--no-children", "--sort", "symbol",
                           "-g", "none", "--stdio"]), 15, "symbol")
    out["dso"] = top(run(["perf", "report", "-i", perf_data, "--no-children", "--sort", "dso",
                          "-g", "none", "--stdio"]), 8, "dso")
    print(json.dumps(out))
    return 0 if samples else 1


# ---------------------------------------------------------------------------
# slowlog: the worker's slow statements, from auto_explain in the server log
# ---------------------------------------------------------------------------
def cmd_slowlog(log_path, pids):
    """auto_explain's entries ("duration: X ms  plan:" + the plan) of the
    given processes (the worker), grouped by statement and plan shape (the
    scan nodes).  Prints one JSON line."""
    import re
    pids = {p for p in pids.split(",") if p}
    head = re.compile(r"\[(\d+)\] LOG:  duration: ([0-9.]+) ms  plan:")
    groups = {}
    cur = None

    def flush(c):
        if not c:
            return
        text = c["text"]
        if "status = 'in_flight'" in text and text.startswith("UPDATE") and "RETURNING d.id" in text:
            kind = "claim"
        elif text.startswith("UPDATE notifier.deliveries SET status = CASE"):
            kind = "mark delivered (outcome UPDATE)"
        elif "min(next_attempt_at)" in text:
            kind = "next retry (SELECT min(next_attempt_at))"
        elif text.startswith("INSERT INTO notifier.deliveries"):
            kind = "write deliveries (drain INSERT)"
        else:
            kind = text[:60]
        shape = " / ".join(c["scans"]) or "?"
        g = groups.setdefault((kind, shape), {"kind": kind, "plan": shape, "count": 0, "total_ms": 0.0,
                                               "max_ms": 0.0})
        g["count"] += 1
        g["total_ms"] += c["ms"]
        g["max_ms"] = max(g["max_ms"], c["ms"])

    try:
        f = open(log_path, errors="replace")
    except OSError:
        print(json.dumps({"error": f"no server log at {log_path}"}))
        return 0
    for line in f:
        m = head.search(line)
        if m:
            flush(cur)
            cur = None
            if m.group(1) in pids:
                cur = {"ms": float(m.group(2)), "text": "", "scans": []}
            continue
        if cur is None:
            continue
        if not line.startswith(("\t", " ")):
            flush(cur)
            cur = None
            continue
        t = line.strip()
        if t.startswith("Query Text:"):
            cur["text"] = t[len("Query Text:"):].strip()
        elif "Scan" in t or t.startswith(("->  Sort", "Sort ")):
            node = t.lstrip("-> ").split("  (")[0]
            if node not in cur["scans"]:
                cur["scans"].append(node)
    flush(cur)
    out = sorted(groups.values(), key=lambda g: -g["total_ms"])
    print(json.dumps({"groups": out}))
    return 0


# ---------------------------------------------------------------------------
# post: the nginx smoke test
# ---------------------------------------------------------------------------
def cmd_post(url):
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    statuses = []
    for _ in range(3):      # three requests on one connection: keep-alive works
        c.request("POST", u.path or "/", body=b'{"id":"smoke"}',
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        statuses.append(r.status)
    c.close()
    print(" ".join(map(str, statuses)))
    return 0 if statuses == [200, 200, 200] else 1


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def fmt_s(s):
    return f"{s:.2f}" if s is not None else "n/a"


def fmt_ms(x):
    return f"{x:.2f}" if x is not None else "n/a"


def fmt_rate(n, s):
    return f"{n / s:,.0f}" if s else "n/a"


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def cmd_report(results_path, meta_path):
    meta = json.load(open(meta_path))
    runs, errors = [], []
    for line in open(results_path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        (errors if "error" in r else runs).append(r)

    def sel(label):
        return [r for r in runs if r["workload"] == label]

    lines = []
    p = lines.append
    p("## pg_notifier webhook delivery: commit to 2xx from nginx")
    p("")
    p(f"{meta['date']} · nproc {meta['nproc']} · RAM {meta['ram']} · {meta['pg_version']} · "
      f"pg_notifier {meta['rev']}{meta.get('so', '')} · {meta['nginx_version']} · {meta['curl_version']} · "
      f"psycopg {meta['psycopg']} · up to {meta['runs']} rounds, median reported")
    p("")
    p(f"Machine: {meta['background']}.  Other processes compete for the {meta['nproc']} cores: compare "
      "with the machine busy column below.")
    p("")
    p(f"One throw-away cluster ({meta['conf_summary']}); database `{meta['db']}` in pg_notifier.databases; "
      f"watched tables `{meta['table_u']}` (channel `{meta['channel_u']}`), `{meta['table_b']}` "
      f"(channel `{meta['channel_b']}`) and `{meta.get('table_k')}` (channel `{meta.get('channel_k')}`), all "
      "`notifier.watch(tbl, payload => 'row')`; webhook routes "
      f"`notifier.add_webhook('{meta['channel_u']}', '{meta['url']}')` (defaults: batch_size 1, "
      f"concurrency 8), `notifier.add_webhook('{meta['channel_b']}', '{meta['url']}', "
      f"batch_size => 100)` and `notifier.add_webhook('{meta.get('channel_k')}', '{meta['url']}', "
      "ordered => 'key')`.  Receiver: its own nginx (Debian package; "
      f"{meta['nginx_summary']}).  Before every measurement no delivery is open, the watched tables and "
      "notifier.deliveries are emptied, CHECKPOINT, the NOTIFY queue is empty.")
    p("")
    p(f"- **throughput**: {meta['throughput_workload']} t0 = the start of the first COMMIT; done when the "
      f"route's `delivered` counter (`notifier.route_stats()`, polled every {meta['poll_ms']} ms) reached N "
      "and then `count(*)` of the route's rows with status 'delivered' in notifier.deliveries is N.  "
      "events/s = N ÷ seconds (median of the rounds).")
    p(f"- **latency**: {meta['latency_workload']}  Per event: commit → 2xx = `delivered_at` of its row in "
      "notifier.deliveries (set by the worker right after the 2xx) minus the commit timestamp of the "
      "event's transaction (`pg_xact_commit_timestamp(xmin)` of the inserted row); both server-side "
      "CLOCK_REALTIME.  Percentiles over all events of a round (nearest rank), the "
      "median of the rounds reported; max = the largest of any round.")
    p("")

    def rate_of(label):
        """(events/s of the median round or None, events, median seconds, incomplete rounds)."""
        rs = sel(label)
        if not rs:
            return None, None, None, 0
        n = rs[0]["events"]
        secs = [r["seconds"] if r.get("complete") else None for r in rs]
        incomplete = sum(1 for s_ in secs if s_ is None)
        # an incomplete round counts as slower than any complete one
        ordered = sorted(secs, key=lambda x: float("inf") if x is None else x)
        sm = ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else (
            None if ordered[len(ordered) // 2] is None else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2)
        return (n / sm if sm else None), n, sm, incomplete

    def fmt_rate_or(rate, label):
        if rate is not None:
            return f"{rate:,.0f} events/s"
        partial = med([r["table_delivered"] / r["elapsed_s"] for r in sel(label)
                       if r.get("table_delivered") and r.get("elapsed_s")])
        return f"incomplete ({'≈' + format(partial, ',.0f') + ' events/s' if partial else 'nothing delivered'})"

    def ratio(a_, b_):
        return a_ / b_ if a_ is not None and b_ else None

    def fmt_x(x):
        return f"{x:.3f}×" if x is not None else "n/a"

    def verdict(ok):
        return "met" if ok else "not met"

    wrk = next(iter(sel("wrk")), None)
    ceiling = wrk.get("rps") if wrk else None
    u_rate, u_n, u_s, u_inc = rate_of("unbatched")
    b_rate, b_n, b_s, b_inc = rate_of("batched")
    k_rate, k_n, k_s, k_inc = rate_of("keyed")
    pgn = next(iter(sel("pgnet")), None)
    pgn_rate = (pgn["events"] / pgn["seconds"]) if pgn and pgn.get("seconds") else (
        pgn["responses"] / pgn["elapsed_s"] if pgn and pgn.get("elapsed_s") else None)

    p("### The ceiling and the peer, same run")
    p("")
    p("| what | events or requests | seconds | per second | ratio |")
    p("| --- | ---: | ---: | ---: | --- |")
    if wrk:
        p(f"| `wrk -t1 -c8` ceiling (keep-alive POSTs of a {wrk.get('body_bytes') or '?'}-byte event-like JSON "
          f"body, same nginx; latency p50 {fmt_ms(wrk.get('p50_ms'))} ms, p99 {fmt_ms(wrk.get('p99_ms'))} ms; "
          f"non-2xx {wrk.get('non_2xx', 0)}) | {wrk.get('requests') or 0:,} | {fmt_s(wrk.get('seconds'))} | "
          f"{ceiling:,.0f} requests/s | the ceiling |")
    else:
        p("| wrk ceiling | – | – | not measured | – |")
    for label, title, rate, n, secs in (("unbatched", "pg_notifier unbatched (batch_size 1)", u_rate, u_n, u_s),
                                        ("batched", "pg_notifier `batch_size 100`", b_rate, b_n, b_s),
                                        ("keyed", f"pg_notifier `ordered => 'key'` over {meta.get('keys', '?'):,} keys",
                                         k_rate, k_n, k_s)):
        if n is None:
            continue
        p(f"| {title} | {n:,} | {fmt_s(secs)} | {fmt_rate_or(rate, label)} | {fmt_x(ratio(rate, ceiling))} "
          "of the ceiling |")
    if pgn:
        p(f"| pg_net {meta.get('pgnet_version') or ''} (trigger + `net.http_post`, Supabase Database Webhooks) | "
          f"{pgn['events']:,} ({pgn.get('responses_2xx', 0):,} 2xx, {pgn.get('errors', 0)} errors) | "
          f"{fmt_s(pgn.get('seconds') or pgn.get('elapsed_s'))} | "
          f"{f'{pgn_rate:,.0f}' if pgn_rate else 'n/a'} events/s{'' if pgn.get('complete') else ' (incomplete)'} | "
          f"{fmt_x(ratio(pgn_rate, ceiling))} of the ceiling; pg_notifier unbatched = "
          f"{f'{u_rate / pgn_rate:,.1f}×' if u_rate and pgn_rate else 'n/a'} pg_net |")
    p("")

    p("### Targets (issue 16)")
    p("")
    p("| target | measured | baseline (same run) | ratio | met / not met |")
    p("| --- | --- | --- | --- | --- |")
    verdicts = []
    r_u = ratio(u_rate, ceiling)
    ok = r_u is not None and r_u >= 0.25 and not u_inc
    verdicts.append(ok)
    p(f"| unbatched ≥ 0.25× the wrk ceiling, over {u_n or 0:,} events | {fmt_rate_or(u_rate, 'unbatched')} | "
      f"wrk {f'{ceiling:,.0f}/s' if ceiling else 'not measured'} | {fmt_x(r_u)} | {verdict(ok)} |")
    ok = b_rate is not None and b_rate >= 100000 and not b_inc
    verdicts.append(ok)
    p(f"| `batch_size 100` ≥ 100,000 events/s, over {b_n or 0:,} events | {fmt_rate_or(b_rate, 'batched')} | – | "
      f"{fmt_x(ratio(b_rate, 100000))} of the target | {verdict(ok)} |")
    r_k = ratio(k_rate, u_rate)
    ok = r_k is not None and r_k >= 0.5 and not k_inc
    verdicts.append(ok)
    p(f"| `ordered => 'key'` ≥ 0.5× unbatched, over {k_n or 0:,} events | {fmt_rate_or(k_rate, 'keyed')} | "
      f"unbatched {fmt_rate_or(u_rate, 'unbatched')} | {fmt_x(r_k)} | {verdict(ok)} |")
    rs = sel("latency")
    if rs:
        ds = [r.get("commit_to_delivered_ms") for r in rs]
        p50 = med([d["p50"] for d in ds if d])
        p99 = med([d["p99"] for d in ds if d])
        ach = med([r.get("rate_achieved") for r in rs])
        complete = all(r.get("complete") for r in rs)
        inc = "" if complete else " (incomplete rounds)"
        m50 = p50 is not None and p50 < 2 and complete
        m99 = p99 is not None and p99 < 10 and complete
        verdicts += [m50, m99]
        p(f"| commit → 2xx p50 < 2 ms at {meta['rate']:,} events/s (achieved {ach:,.0f}/s) | {fmt_ms(p50)} ms{inc} | – | "
          f"{fmt_x(ratio(p50, 2))} of the limit | {verdict(m50)} |")
        p(f"| commit → 2xx p99 < 10 ms at {meta['rate']:,} events/s | {fmt_ms(p99)} ms{inc} | – | "
          f"{fmt_x(ratio(p99, 10))} of the limit | {verdict(m99)} |")
    else:
        verdicts += [False, False]
        p(f"| commit → 2xx p50 < 2 ms, p99 < 10 ms at {meta['rate']:,} events/s | not measured | – | – | not met |")
    bl = next(iter(sel("bloat")), None)
    if bl and len(bl.get("phases") or []) >= 5:
        before, held, after, _, vac = bl["phases"][:5]
        r_h = ratio(held["delivered_per_s"], before["delivered_per_s"])
        ok = r_h is not None and r_h >= 0.8 and bl.get("complete")
        verdicts.append(ok)
        p(f"| under a held xmin ({bl['hold_s']:.0f} s REPEATABLE READ snapshot, {bl['rate_target']:,.0f} events/s "
          f"offered): delivered ≥ 80% of before | {held['delivered_per_s']:,.0f} events/s (produced "
          f"{held['produced_per_s']:,.0f}/s) | before: {before['delivered_per_s']:,.0f} events/s | {fmt_x(r_h)} | "
          f"{verdict(ok)} |")
        live = max(vac.get("rows") or 0, 1)
        ok = bl.get("complete") and vac["dead_tuples"] <= 0.01 * live
        verdicts.append(ok)
        p(f"| no growth left once the xmin is released: dead tuples after VACUUM ≤ 1% of the rows | "
          f"{vac['dead_tuples']:,} dead of {vac.get('rows') or 0:,} rows, {vac['total_bytes'] / 1e6:.1f} MB | "
          f"end of the hold: {held['dead_tuples']:,} dead, {held['total_bytes'] / 1e6:.1f} MB | "
          f"{fmt_x(ratio(vac['dead_tuples'], live))} | {verdict(ok)} |")
    else:
        verdicts += [False, False]
        p("| under a held xmin: ≥ 80% of the throughput before, no growth left after | not measured | – | – | not met |")
    p("")
    p(f"{sum(1 for v in verdicts if v)} of {len(verdicts)} targets met.  Targets are reported, never enforced "
      "(timing never fails the benchmark).")
    p("")

    if bl and bl.get("phases"):
        p(f"Held xmin, phase by phase: {bl.get('producers')} producer connections, single-row autocommit "
          f"INSERTs into `{meta['table_u']}` (the unbatched route) paced at {bl['rate_target']:,.0f} events/s in "
          f"all (achieved {bl.get('rate_achieved', 0):,.0f}/s); a REPEATABLE READ transaction took its snapshot "
          f"after {bl['before_s']:.0f} s and held it {bl['hold_s']:.0f} s (xmin {bl.get('holder_xmin')}); "
          "delivered = the route's `delivered` counter; dead tuples = `pg_stat_user_tables.n_dead_tup` "
          "(as the worker last reported them); autovacuum is off in this cluster: only the explicit VACUUM "
          "at the end removes anything.  Delivered rows are kept for `pg_notifier.retention`, so the live rows "
          "grow with the events by design.")
        p("")
        p("| phase | seconds | produced/s | delivered/s | backlog at the end | rows | dead tuples | heap MB | "
          "indexes MB |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for ph in bl["phases"]:
            p(f"| {ph['phase']} | {fmt_s(ph.get('seconds'))} | "
              f"{format(ph['produced_per_s'], ',.0f') if 'produced_per_s' in ph else '–'} | "
              f"{format(ph['delivered_per_s'], ',.0f') if 'delivered_per_s' in ph else '–'} | "
              f"{format(ph['backlog_end'], ',') if 'backlog_end' in ph else '–'} | {ph.get('rows') or 0:,} | "
              f"{ph['dead_tuples']:,} | {ph['heap_bytes'] / 1e6:.1f} | {ph['index_bytes'] / 1e6:.1f} |")
        p("")

    # where the time goes
    p("### Where the time goes (medians)")
    p("")
    p("CPU seconds from /proc/PID/stat (utime + stime, all threads) over the measurement: the worker "
      "(which drains NOTIFY, writes notifier.deliveries, runs libcurl and marks rows delivered), nginx "
      "(master + workers) and the producer's backend.  µs/event = worker CPU ÷ N; events per "
      "CPU-second = what the worker could do with a core to itself; worker busy = worker CPU ÷ seconds (100% = one core, the worker is one process).  Machine busy = share of all "
      f"{meta['nproc']} cores busy (/proc/stat) during the measurement; outside the benchmark = that busy "
      "time minus the CPU of the cluster's processes, nginx and the measuring process, in cores (other "
      "work on the machine competing with the benchmark).  Written = all N rows in "
      "notifier.deliveries (the route's `written` counter); steady = delivery rate between 10% and 90% "
      "of N delivered.  Mark-delivered transactions = distinct xmin of the delivered rows.")
    p("")
    p("| workload | events | producer s | all written s | first 2xx s | all delivered s | steady events/s | "
      "worker CPU s | worker busy | worker µs/event | worker events per CPU-second | nginx CPU s | producer backend CPU s | "
      "machine busy | outside the benchmark | mark-delivered transactions (events each) | worker samples |")
    p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for label in ("unbatched", "batched", "keyed", "latency"):
        rs = sel(label)
        if not rs:
            continue
        n = rs[0]["events"]
        wcpu = med([r.get("worker_cpu") for r in rs])
        x = med([r.get("delivered_xacts") for r in rs])
        samples = {}
        for r in rs:
            for k, v in (r.get("worker_samples") or {}).items():
                samples[k] = samples.get(k, 0) + v
        tot = sum(samples.values()) or 1
        shown = [(k, v) for k, v in sorted(samples.items(), key=lambda kv: -kv[1]) if v / tot >= 0.03]
        other = tot - sum(v for _, v in shown)
        stext = ", ".join(f"{k} {100 * v / tot:.0f}%" for k, v in shown) if samples else "–"
        if samples and other:
            stext += f", other {100 * other / tot:.0f}%"
        mb = med([r.get("machine_busy") for r in rs])
        steady = med([r.get("steady_rate") for r in rs])
        oc = med([r.get("others_cores") for r in rs])
        wb = med([r["worker_cpu"] / r["seconds"] for r in rs if r.get("worker_cpu") is not None and r.get("seconds")])
        p(f"| {label} | {n:,} | {fmt_s(med([r.get('producer_s') for r in rs]))} | "
          f"{fmt_s(med([r.get('written_s') for r in rs]))} | "
          f"{fmt_s(med([r.get('first_delivered_s') for r in rs]))} | "
          f"{fmt_s(med([r.get('seconds') if r.get('complete') else None for r in rs]))} | "
          f"{f'{steady:,.0f}' if steady else '–'} | {fmt_s(wcpu)} | "
          f"{f'{100 * wb:.0f}%' if wb is not None else 'n/a'} | "
          f"{f'{1e6 * wcpu / n:.1f}' if wcpu is not None else 'n/a'} | "
          f"{f'{n / wcpu:,.0f}' if wcpu else 'n/a'} | {fmt_s(med([r.get('nginx_cpu') for r in rs]))} | "
          f"{fmt_s(med([r.get('producer_backend_cpu') for r in rs]))} | "
          f"{f'{100 * mb:.0f}%' if mb is not None else 'n/a'} | "
          f"{f'{oc:.2f} cores' if oc is not None else 'n/a'} | "
          f"{f'{x:,.0f} ({n / x:,.1f})' if x else 'n/a'} | {stext} |")
    p("")

    rs = sel("latency")
    if rs:
        p(f"Latency at {meta['rate']:,} events/s, in ms (median of the rounds' percentiles; max of the rounds' "
          "max).  Commit timestamp = `pg_xact_commit_timestamp(xmin)` of the event's row "
          "(track_commit_timestamp: taken when the commit record is written, before listeners are "
          "signalled); the producer's own server-clock stamps just before and just after its COMMIT "
          "bracket it (they differ when the producer's backend is preempted around its commit on a "
          "busy machine).  commit → received = the worker's drain (NOTIFY read and the row written in "
          "notifier.deliveries, `received_at`); received → delivered = its HTTP part "
          "(`delivered_at - received_at`); the route's own view is `notifier.stats` "
          "latency_p50_ms / latency_p99_ms (receipt to 2xx, last 256 deliveries) at the end of the round.")
        p("")
        p("| span | p50 | p90 | p99 | p99.9 | max |")
        p("| --- | ---: | ---: | ---: | ---: | ---: |")
        for key, title in (("commit_to_delivered_ms", "**commit → 2xx** (`delivered_at` − commit timestamp)"),
                           ("before_commit_to_delivered_ms",
                            "the same from the producer's `clock_timestamp()` just before COMMIT (upper bound)"),
                           ("after_commit_to_delivered_ms",
                            "the same from the producer's `clock_timestamp()` just after COMMIT (lower bound)"),
                           ("commit_to_received_ms", "commit → received (`received_at` − commit timestamp)"),
                           ("received_to_delivered_ms", "received → 2xx (`delivered_at − received_at`)"),
                           ("commit_itself_ms", "the producer's COMMIT itself (its clock before → after)")):
            ds = [r.get(key) for r in rs if r.get(key)]
            if not ds:
                continue
            p(f"| {title} | {fmt_ms(med([d['p50'] for d in ds]))} | {fmt_ms(med([d['p90'] for d in ds]))} | "
              f"{fmt_ms(med([d['p99'] for d in ds]))} | {fmt_ms(med([d['p999'] for d in ds]))} | "
              f"{fmt_ms(max(d['max'] for d in ds))} |")
        s50 = med([r.get("stats_latency_p50_ms") for r in rs])
        s99 = med([r.get("stats_latency_p99_ms") for r in rs])
        p(f"| notifier.stats latency_p50_ms / latency_p99_ms | {fmt_ms(s50)} | | {fmt_ms(s99)} | | |")
        p("")
        for r in rs:
            if r.get("p99_per_second_ms"):
                p(f"- p99 per second of the run (ms), one round: {' '.join(map(str, r['p99_per_second_ms']))}")
                break
        late = med([r.get("late") for r in rs])
        p(f"- producer: {med([r.get('rate_achieved') for r in rs]):,.0f} transactions/s achieved, "
          f"{late:.0f} sent more than one period late (median); negative commit → 2xx latencies: "
          f"{sum(r.get('negative_latencies') or 0 for r in rs)}; commit timestamps outside the producer's "
          f"before/after stamps: {sum(r.get('commit_timestamp_outside_stamps') or 0 for r in rs)}; "
          f"rows without a commit timestamp: {sum(r.get('no_commit_timestamp') or 0 for r in rs)}")
        p("")

    hist = sel("latency-history")
    if hist:
        p("Latency on a table with a past (diagnostic): the same paced producer for a shorter run, but "
          "notifier.deliveries keeps the delivered rows of the run before it and is `VACUUM ANALYZE`d "
          "first, as autovacuum would leave it in a long-running system.  Above, every measurement starts "
          "from an emptied, never analyzed table (a fresh install): the worker's cached plans are then "
          "made for an empty table.")
        p("")
        p("| variant | events | rows already in notifier.deliveries | commit → 2xx p50 ms | p99 ms | max ms | "
          "worker µs/event | worker busy |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, rs_ in (("emptied, never analyzed (the measurement above)", sel("latency")),
                           ("with a past, vacuumed and analyzed", hist)):
            if not rs_:
                continue
            ds = [r.get("commit_to_delivered_ms") for r in rs_ if r.get("commit_to_delivered_ms")]
            wc = med([r.get("worker_cpu") / r["events"] for r in rs_ if r.get("worker_cpu") is not None])
            wb = med([r["worker_cpu"] / r["seconds"] for r in rs_ if r.get("worker_cpu") is not None and r.get("seconds")])
            hr = med([r.get("history_rows") or 0 for r in rs_])
            p(f"| {label} | {rs_[0]['events']:,} | {hr:,.0f} | {fmt_ms(med([d['p50'] for d in ds]))} | "
              f"{fmt_ms(med([d['p99'] for d in ds]))} | {fmt_ms(max((d['max'] for d in ds), default=None))} | "
              f"{f'{1e6 * wc:.0f}' if wc is not None else 'n/a'} | {f'{100 * wb:.0f}%' if wb is not None else 'n/a'} |")
        p("")

    checks = []
    for r in runs:
        if r.get("kind") not in ("throughput", "latency"):
            if r.get("kind") in ("pgnet", "bloat") and not r.get("complete"):
                checks.append(f"{r['workload']}: incomplete")
            continue
        bad = []
        if not r.get("complete"):
            bad.append("incomplete")
        if r.get("rows") != r["events"]:
            bad.append(f"{r.get('rows')} rows in notifier.deliveries for {r['events']} events")
        if r.get("distinct_event_ids") is not None and r.get("distinct_event_ids") != r.get("rows"):
            bad.append(f"{r.get('distinct_event_ids')} distinct event ids")
        if r.get("dead_rows"):
            bad.append(f"{r['dead_rows']} dead")
        if r.get("attempts") is not None and r.get("rows") and r["attempts"] != r["rows"]:
            bad.append(f"{r['attempts']} attempts for {r['rows']} rows")
        if r.get("non_200"):
            bad.append(f"{r['non_200']} rows with last_http_status ≠ 200")
        if r.get("missing"):
            bad.append(f"{r['missing']} events without a delivered row")
        if r.get("duplicate_keys"):
            bad.append(f"{r['duplicate_keys']} duplicate rows")
        if r.get("worker_pid_after") != r.get("worker_pid"):
            bad.append(f"worker pid {r.get('worker_pid')} → {r.get('worker_pid_after')}")
        if r.get("thrown_away"):
            bad.append(f"{r['thrown_away']} open deliveries of an earlier measurement thrown away")
        if bad:
            checks.append(f"{r['workload']}: " + ", ".join(bad) + (f" (last error: {r['last_error']})"
                                                                   if r.get("last_error") else ""))
    for prof in meta.get("perf") or []:
        ev, wc = prof.get("events"), prof.get("worker_cpu")
        p(f"Profile of the worker (`perf record -F 999 -g -p PID`, {prof.get('samples', '?')} samples) during "
          f"one more {prof.get('label', '?')} run ({f'{ev:,}' if ev else '?'} events"
          + (f", worker CPU {wc:.2f} s = {1e6 * wc / ev:.0f} µs/event" if wc and ev else "")
          + "): share of the worker's samples by the place in pg_notifier.so on the stack (innermost "
          "frame of the extension, inlined static functions resolved; source lines of the installed "
          ".so), split by what PostgreSQL was doing under it.")
        p("")
        p("| place in pg_notifier (source lines: % of samples) | % of samples | of which |")
        p("| --- | ---: | --- |")
        for site in prof.get("sites") or []:
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in site["kinds"].items() if v >= 0.1)
            lines_ = ", ".join(f"{l} {v:.1f}%" for l, v in site.get("lines") or [] if v >= 0.1)
            p(f"| `{site['site']}`{f' ({lines_})' if lines_ else ''} | {site['pct']:.1f} | {kinds} |")
        p("")
        if prof.get("kinds"):
            p("All samples by activity: " + ", ".join(f"{k} {v:.1f}%" for k, v in prof["kinds"].items()) + ".")
            p("")
        if prof.get("self"):
            p("Hottest self: " + ", ".join(f"`{s_}` {v:.1f}%" for s_, v in prof["self"]) + ".")
            p("")
        if prof.get("dso"):
            p("By shared object (self): " + ", ".join(f"`{s_}` {v:.1f}%" for s_, v in prof["dso"]) + ".")
            p("")
    slow = meta.get("slow") or {}
    if slow.get("groups") is not None:
        rate = meta.get("auto_explain_sample") or 1.0
        p(f"The worker's statements that took {meta.get('auto_explain_ms', '?')} ms or more, over the whole run "
          f"(auto_explain in the server log, timing a random {100 * rate:g}% of the statements: the plans the "
          "worker really ran; a claim of 8 rows normally takes a fraction of a millisecond): by statement and "
          "plan shape (scan nodes, outer first).  Estimated = logged ÷ sample rate.")
        p("")
        if slow["groups"]:
            p("| statement | plan shape | logged | estimated count | estimated total s | max ms |")
            p("| --- | --- | ---: | ---: | ---: | ---: |")
            for g in slow["groups"][:12]:
                p(f"| {g['kind']} | {g['plan']} | {g['count']:,} | {g['count'] / rate:,.0f} | "
                  f"{g['total_ms'] / 1000 / rate:.1f} | {g['max_ms']:.1f} |")
        else:
            p("None.")
        p("")
    replay = meta.get("replay") or []
    if replay:
        stm = meta.get("replay_statements") or {}
        p("The worker's delivery SQL alone, without HTTP: a backlog of pending rows (of a route id no worker "
          "serves), then in a loop, for about 1.5 s, the worker's claim statement (read from the loaded "
          "pg_notifier.so, PREPAREd with delivery.c's argument types; concurrency × batch_size rows, one "
          "transaction) and its outcome UPDATE once per request of batch_size rows (one transaction), run "
          "by a DO block through `EXECUTE` of the prepared statements: their plans come from the plan "
          "cache as the worker's kept SPI plans do (custom plans, or a generic one once the cache finds it "
          "cheaper); the dynamic `EXECUTE` adds a little per statement.  \"no statistics\" = "
          "notifier.deliveries never analyzed (as in the measurements above: autovacuum off; also a fresh "
          "install until autovacuum's first ANALYZE).  Claim plan = the plan of its row-picking subquery "
          "when the loop ended.")
        p("")
        if stm:
            p(f"- claim: `{stm.get('claim')}`")
            p(f"- outcome: `{stm.get('outcome')}`")
            p("")
        p("| backlog | batch_size | statistics | claim plan | events claimed | ms per claim | claim µs/event | "
          "mark delivered µs/event | SQL-only ceiling events/s |")
        p("| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in replay:
            ev = r.get("events") or 0
            cl = r.get("claims") or 0
            cu = 1e6 * r.get("claim_s", 0) / ev if ev else None
            ou = 1e6 * r.get("outcome_s", 0) / ev if ev else None
            per_claim = f"{1000 * r.get('claim_s', 0) / cl:.2f}" if cl else "n/a"
            ceiling = f"{1e6 / (cu + ou):,.0f}" if cu is not None and cu + ou > 0 else "n/a"
            stats_ = "analyzed" if r["analyzed"] else "no statistics"
            p(f"| {r['backlog']:,} | {r['batch_size']} | {stats_} | {r.get('claim_scan', '?')} | {ev:,} | "
              f"{per_claim} | {f'{cu:.0f}' if cu is not None else 'n/a'} | "
              f"{f'{ou:.0f}' if ou is not None else 'n/a'} | {ceiling} |")
        p("")
    if meta.get("observations"):
        p("### Observations")
        p("")
        for o in meta["observations"]:
            p(f"- {o}")
        p("")
    if errors or checks:
        p("Errors and inconsistencies:")
        for e in errors:
            p(f"- {e['workload']}: {e['error']}")
        for c in checks:
            p(f"- {c}")
        p("")
    p("<details><summary>all rounds</summary>")
    p("")
    for label in ("unbatched", "batched", "keyed"):
        rs = sel(label)
        if rs:
            p(f"- {label}: seconds " + " ".join(fmt_s(r.get("seconds")) for r in rs)
              + "; producer " + " ".join(fmt_s(r.get("producer_s")) for r in rs)
              + "; all written " + " ".join(fmt_s(r.get("written_s")) for r in rs)
              + "; worker CPU " + " ".join(fmt_s(r.get("worker_cpu")) for r in rs)
              + "; machine busy " + " ".join(f"{100 * (r.get('machine_busy') or 0):.0f}%" for r in rs)
              + "; outside the benchmark (cores) " + " ".join(fmt_s(r.get("others_cores")) for r in rs)
              + "; notifier.stats p50/p99 ms " + " ".join(f"{fmt_ms(r.get('stats_latency_p50_ms'))}/"
                                                          f"{fmt_ms(r.get('stats_latency_p99_ms'))}" for r in rs))
    rs = sel("latency")
    for r in rs:
        d = r.get("commit_to_delivered_ms") or {}
        p(f"- latency: p50 {fmt_ms(d.get('p50'))} p99 {fmt_ms(d.get('p99'))} max {fmt_ms(d.get('max'))} ms, "
          f"{r.get('rate_achieved', 0):,.0f}/s, worker CPU {fmt_s(r.get('worker_cpu'))} s, machine busy "
          f"{100 * (r.get('machine_busy') or 0):.0f}%, outside the benchmark {fmt_s(r.get('others_cores'))} cores")
    if meta.get("end_note"):
        p(f"- {meta['end_note']}")
    p("")
    p("</details>")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "throughput":
        return cmd_throughput(args)
    if cmd == "latency":
        return cmd_latency(args)
    if cmd == "post":
        return cmd_post(*args)
    if cmd == "wrk":
        return cmd_wrk(*args)
    if cmd == "pgnet":
        return cmd_pgnet(args)
    if cmd == "bloat":
        return cmd_bloat(args)
    if cmd == "profile":
        return cmd_profile(*args)
    if cmd == "replay":
        return cmd_replay(args)
    if cmd == "slowlog":
        return cmd_slowlog(*args)
    if cmd == "report":
        return cmd_report(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
