#!/usr/bin/python3
"""test/bench/worker_drain.py -- the measuring half of test/bench/worker.

Run with Debian's /usr/bin/python3 (psycopg 3).  Connection parameters come
from the environment (PGHOST, PGPORT, PGUSER) that test/lib/cluster.sh exports.

  worker_drain.py measure [options]   one measurement; prints one JSON line
  worker_drain.py listen DB CHANNEL N TIMEOUT
                                      the reference LISTEN client (its own
                                      process, started by "measure")
  worker_drain.py sink DB CHANNEL     diagnostics: the worker's INSERT and the
                                      JSON validation, alone, on real payloads
  worker_drain.py report RESULTS META  the Markdown report of results.jsonl

Clocks: every time is time.monotonic() (CLOCK_MONOTONIC, the same clock in
every process of the machine), so the LISTEN client's timestamps and those of
the measuring process can be subtracted.

One measurement ("measure"):
  1. the route of the channel is made present (--route on) or absent (off),
     and the worker's notifier.status() must list (or not list) the channel;
  2. the watched table and notifier.queue are emptied (the TRUNCATE of the
     watched table in session_replication_role = replica, so that its
     truncate event is not sent), CHECKPOINT, and the NOTIFY queue is empty;
  3. with --listen on, the LISTEN client is started and must be listening;
  4. a sampler thread polls, every --poll seconds, the route's "written"
     counter (notifier.route_stats(), shared memory) and what the worker is
     doing (pg_stat_activity, /proc/PID/stat);
  5. the producer runs: "bulk" = --txns transactions of --rows-row
     INSERT ... SELECT, t0 = the start of the first COMMIT; "pgbench" =
     pgbench -n -c -j -t with a single-row INSERT script, t0 = pgbench's start;
  6. done when the queue holds every event (written = N, then checked with
     count(*) on notifier.queue) and/or the client has received N.
"""
import json
import os
import select
import statistics
import subprocess
import sys
import threading
import time

import psycopg
from psycopg import sql as pgsql

CLK_TCK = os.sysconf("SC_CLK_TCK")


def now():
    return time.monotonic()


def proc_cpu(pid):
    """CPU seconds (user + system) of a process, from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
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


def machine_cpu():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def connect(db, autocommit=True):
    return psycopg.connect(dbname=db, autocommit=autocommit,
                           application_name="bench worker_drain")


# ---------------------------------------------------------------------------
# listen: the reference client
# ---------------------------------------------------------------------------
def cmd_listen(db, channel, n, timeout):
    """LISTEN on channel until n notifications arrived.  Prints "ready PID"
    once listening, then one JSON line.  Reads at the libpq level (no
    per-message Python work beyond psycopg's own Notify object)."""
    n = int(n)
    conn = connect(db)
    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
    bpid = conn.info.backend_pid
    bcpu0 = proc_cpu(bpid)
    print(f"ready {bpid}", flush=True)
    pg = conn.pgconn
    want = channel.encode()
    deadline = now() + float(timeout)
    count = 0
    t_first = None
    cpu0 = time.process_time()
    while count < n:
        left = deadline - now()
        if left <= 0:
            break
        select.select([pg.socket], [], [], left)
        pg.consume_input()
        while True:
            msg = pg.notifies()
            if msg is None:
                break
            if msg.relname == want:
                count += 1
                if t_first is None:
                    t_first = now()
    t_last = now()
    bcpu1 = proc_cpu(bpid)
    print(json.dumps({
        "count": count, "complete": count >= n,
        "t_first": t_first, "t_last": t_last if count >= n else None,
        "cpu": time.process_time() - cpu0,
        "backend_cpu": (bcpu1 - bcpu0) if bcpu0 is not None and bcpu1 is not None else None,
    }), flush=True)
    conn.close()
    return 0 if count >= n else 1


# ---------------------------------------------------------------------------
# measure
# ---------------------------------------------------------------------------
def status_row(conn):
    return conn.execute(
        "SELECT pid, state, channels FROM notifier.status() "
        "WHERE database = current_database()").fetchone()


def ensure_route(conn, channel, want_on, timeout=15.0):
    """Add or remove the queue route of channel; wait until the worker
    listens (or no longer listens) to it.  Returns the route id or None."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM notifier.routes WHERE channel = %s AND kind = 'queue' "
        "AND queue_table = 'notifier.queue'::regclass ORDER BY id", (channel,))]
    if want_on and not ids:
        ids = [conn.execute("SELECT notifier.add_queue(%s)", (channel,)).fetchone()[0]]
    elif not want_on:
        for i in ids:
            conn.execute("SELECT notifier.remove_route(%s)", (i,))
        ids = []
    deadline = now() + timeout
    while True:
        row = status_row(conn)
        listed = row is not None and row[2] is not None and channel in row[2]
        if listed == want_on and row is not None and row[0]:
            return ids[0] if ids else None
        if now() > deadline:
            raise RuntimeError(f"the worker's notifier.status() does not {'list' if want_on else 'drop'} "
                               f"channel {channel!r} after {timeout} s: {row}")
        time.sleep(0.02)


def reset(conn, table):
    conn.execute("SET session_replication_role = replica")
    conn.execute(f"TRUNCATE {table} RESTART IDENTITY")
    conn.execute("RESET session_replication_role")
    conn.execute("TRUNCATE notifier.queue RESTART IDENTITY")
    conn.execute("CHECKPOINT")
    deadline = now() + 60
    while conn.execute("SELECT pg_notification_queue_usage()").fetchone()[0] > 0.0001:
        if now() > deadline:
            raise RuntimeError("the NOTIFY queue did not empty within 60 s")
        time.sleep(0.1)


class Sampler(threading.Thread):
    """Polls the route's written counter and what the worker does."""

    def __init__(self, db, route_id, target, worker_pid, poll, timeout):
        super().__init__(daemon=True)
        self.conn = connect(db)
        self.route_id = route_id
        self.worker_pid = worker_pid
        self.poll = poll
        self.timeout = timeout
        self.base = self.written() if route_id is not None else 0
        self.target = self.base + target
        self.stop = threading.Event()
        self.t_start = None          # set by the producer: the clock starts
        self.t_first = None          # first time written moved
        self.t_done = None           # written reached the target
        self.last = self.base
        self.samples = {}            # "state/wait_event" -> count
        self.proc_states = {}        # "R"/"S"/... -> count
        self.error = None

    def written(self):
        row = self.conn.execute(
            "SELECT written FROM notifier.route_stats() WHERE route_id = %s",
            (self.route_id,)).fetchone()
        return row[0] if row else 0

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by measure
            self.error = f"sampler: {e}"

    def _run(self):
        q = ("SELECT (SELECT written FROM notifier.route_stats() WHERE route_id = %s), "
             "       a.state, a.wait_event_type, a.wait_event "
             "  FROM (SELECT 1) x LEFT JOIN pg_stat_activity a ON a.pid = %s")
        deadline = None
        while not self.stop.is_set():
            written, state, wtype, wevent = self.conn.execute(q, (self.route_id, self.worker_pid)).fetchone()
            t = now()
            if self.t_start is not None:
                if deadline is None:
                    deadline = self.t_start + self.timeout
                key = f"{state or '?'}/{wevent or 'on CPU or no wait'}"
                self.samples[key] = self.samples.get(key, 0) + 1
                ps = proc_state(self.worker_pid)
                self.proc_states[ps] = self.proc_states.get(ps, 0) + 1
                if self.route_id is not None:
                    written = written or 0
                    self.last = written
                    if written > self.base and self.t_first is None:
                        self.t_first = t
                    if written >= self.target:
                        self.t_done = t
                        return
                if t > deadline:
                    return
            time.sleep(self.poll)


def produce_bulk(db, table, txns, rows, sampler):
    conn = connect(db, autocommit=False)
    bpid = conn.info.backend_pid
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
    return {"t0": t0, "t_produced": t1, "producer_backend_cpu": cpu1 - cpu0, "tps": None}


def produce_pgbench(db, script, clients, threads, per_client, sampler):
    pgbench = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin") + "/pgbench"
    cmd = [pgbench, "-n", "-c", str(clients), "-j", str(threads), "-t", str(per_client), "-f", script, db]
    t0 = now()
    sampler.t_start = t0
    p = subprocess.run(cmd, capture_output=True, text=True)
    t1 = now()
    if p.returncode != 0:
        raise RuntimeError(f"pgbench failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    tps = None
    for line in p.stdout.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
    return {"t0": t0, "t_produced": t1, "producer_backend_cpu": None, "tps": tps}


def cmd_measure(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="worker_drain.py measure")
    ap.add_argument("--db", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--channel", required=True)
    ap.add_argument("--workload", choices=["bulk", "pgbench"], required=True)
    ap.add_argument("--mode", choices=["producer", "worker", "client", "both"], required=True)
    ap.add_argument("--txns", type=int, default=20)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-client", type=int, default=4000)
    ap.add_argument("--script")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--poll", type=float, default=0.025)
    a = ap.parse_args(argv)

    route_on = a.mode in ("worker", "both")
    listen_on = a.mode in ("client", "both")
    n = a.txns * a.rows if a.workload == "bulk" else a.clients * a.per_client
    res = {"workload": a.workload, "mode": a.mode, "events": n}

    ctl = connect(a.db)
    route_id = ensure_route(ctl, a.channel, route_on)
    reset(ctl, a.table)
    worker_pid = status_row(ctl)[0]
    res["route_id"] = route_id
    res["worker_pid"] = worker_pid

    listener = None
    if listen_on:
        listener = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "listen", a.db, a.channel, str(n), str(a.timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = listener.stdout.readline()
        if not line.startswith("ready "):
            listener.kill()
            raise RuntimeError(f"the LISTEN client did not start: {line}{listener.stderr.read()}")
        res["client_backend_pid"] = int(line.split()[1])

    sampler = Sampler(a.db, route_id, n if route_on else 0, worker_pid, a.poll, a.timeout)
    sampler.start()
    wcpu0 = proc_cpu(worker_pid)
    m0 = machine_cpu()
    try:
        if a.workload == "bulk":
            prod = produce_bulk(a.db, a.table, a.txns, a.rows, sampler)
        else:
            prod = produce_pgbench(a.db, a.script, a.clients, a.threads, a.per_client, sampler)
    except Exception:
        sampler.stop.set()
        if listener:
            listener.kill()
        raise
    res.update(prod)
    t0 = prod["t0"]

    client = None
    if listener:
        try:
            out, err = listener.communicate(timeout=a.timeout + 30)
        except subprocess.TimeoutExpired:
            listener.kill()
            out, err = listener.communicate()
        lines = [l for l in out.splitlines() if l.startswith("{")]
        if not lines:
            raise RuntimeError(f"the LISTEN client failed: {out} {err}")
        client = json.loads(lines[-1])
    if route_on:
        sampler.join(a.timeout + 30)
    else:
        sampler.stop.set()
        sampler.join(5)
    t_end = now()
    m1 = machine_cpu()
    wcpu1 = proc_cpu(worker_pid)
    if sampler.error:
        raise RuntimeError(sampler.error)

    res["producer_s"] = prod["t_produced"] - t0
    if route_on:
        res["queue_complete"] = sampler.t_done is not None
        res["queue_written"] = sampler.last - sampler.base
        res["queue_s"] = (sampler.t_done - t0) if sampler.t_done else None
        res["queue_first_s"] = (sampler.t_first - t0) if sampler.t_first else None
        res["queue_lag_s"] = (sampler.t_done - prod["t_produced"]) if sampler.t_done else None
        res["queue_count"] = ctl.execute("SELECT count(*) FROM notifier.queue").fetchone()[0]
        res["queue_ids_ok"] = ctl.execute(
            "SELECT count(*) = 0 OR (min(id) = 1 AND max(id) = count(*)) FROM notifier.queue").fetchone()[0]
    if client:
        res["client_complete"] = client["complete"]
        res["client_count"] = client["count"]
        res["client_s"] = (client["t_last"] - t0) if client["t_last"] else None
        res["client_first_s"] = (client["t_first"] - t0) if client["t_first"] else None
        res["client_lag_s"] = (client["t_last"] - prod["t_produced"]) if client["t_last"] else None
        res["client_cpu"] = client["cpu"]
        res["client_backend_cpu"] = client["backend_cpu"]
    # the span of the measurement: until the last consumer had everything
    ends = [x for x in (res.get("queue_s"), res.get("client_s")) if x is not None]
    span = max(ends) if ends else res["producer_s"]
    res["span_s"] = span
    res["worker_cpu"] = (wcpu1 - wcpu0) if wcpu0 is not None and wcpu1 is not None else None
    if route_on:
        # every row exactly once (the key of each event distinct), and for the
        # single-connection bulk workload in commit order
        res["queue_distinct_keys"], res["queue_order_errors"] = ctl.execute(
            "SELECT count(DISTINCT k), count(*) FILTER (WHERE k < prev) FROM ("
            "  SELECT (payload->'key'->>'id')::bigint AS k,"
            "         lag((payload->'key'->>'id')::bigint) OVER (ORDER BY id) AS prev"
            "    FROM notifier.queue) s").fetchone()
        if a.workload != "bulk":
            res["queue_order_errors"] = None    # 8 clients: commit order is not key order
        # received_at is set once per drain, xmin once per worker transaction
        res["queue_drains"], res["queue_xacts"] = ctl.execute(
            "SELECT count(DISTINCT received_at), count(DISTINCT xmin::text) FROM notifier.queue").fetchone()
    res["worker_pid_after"] = status_row(ctl)[0]
    busy = m1[0] - m0[0]
    total = m1[1] - m0[1]
    res["machine_busy"] = busy / total if total else None      # fraction of all cores
    res["measured_wall_s"] = t_end - t0
    res["worker_samples"] = sampler.samples
    res["worker_proc_states"] = sampler.proc_states
    print(json.dumps(res), flush=True)
    # a progress line for the driver's output
    parts = [f"producer {res['producer_s']:.2f} s"]
    if res.get("tps"):
        parts.append(f"{res['tps']:,.0f} tps")
    if route_on:
        parts.append(f"queue {fmt_s(res['queue_s'])} s ({fmt_rate(n, res['queue_s'])} ev/s)"
                     if res["queue_complete"] else f"queue INCOMPLETE: {res['queue_written']} of {n}")
    if client:
        parts.append(f"client {fmt_s(res['client_s'])} s ({fmt_rate(n, res['client_s'])} ev/s)"
                     if res["client_complete"] else f"client INCOMPLETE: {res['client_count']} of {n}")
    if res["worker_cpu"] is not None:
        parts.append(f"worker CPU {res['worker_cpu']:.2f} s")
    print(", ".join(parts), file=sys.stderr, flush=True)
    ctl.close()
    return 0


# ---------------------------------------------------------------------------
# sink: the parts of the worker's work, alone
# ---------------------------------------------------------------------------
def cmd_sink(db, channel, batch_size, runs):
    """Times, on the payloads the worker wrote (notifier.queue must hold
    them), in the worker's batches of batch_size, one transaction each and
    server-side (no array travels from the client): the worker's INSERT (the
    text of queue_sink.c), the same INSERT into a copy of notifier.queue
    without its indexes, and the parts of it alone -- parsing the payloads as
    jsonb (the INSERT's cast), as json (one validating pass, what
    json_is_valid() in forward.c costs), and only unnesting the arrays (the
    baseline of the replay).  Leaves notifier.queue empty.  Prints one JSON line."""
    batch_size, runs = int(batch_size), int(runs)
    conn = connect(db)
    conn.execute("DROP TABLE IF EXISTS pg_temp.bench_batches")
    conn.execute(
        "CREATE TEMP TABLE bench_batches AS "
        "SELECT (id - 1) / %s AS b, array_agg(payload::text ORDER BY id) AS a "
        "  FROM notifier.queue GROUP BY 1", (batch_size,))
    nb, nev, avg_len = conn.execute(
        "SELECT count(*), sum(cardinality(a)), "
        "       (SELECT avg(octet_length(p)) FROM bench_batches, unnest(a) p) FROM bench_batches").fetchone()
    if not nev:
        raise RuntimeError("notifier.queue is empty: nothing to replay")
    sample = conn.execute("SELECT payload::text FROM notifier.queue ORDER BY id LIMIT 1").fetchone()[0]
    conn.execute("DROP TABLE IF EXISTS public.bench_queue_noindex")
    conn.execute("CREATE TABLE public.bench_queue_noindex (LIKE notifier.queue INCLUDING DEFAULTS)")
    arr = "pg_catalog.unnest((SELECT a FROM bench_batches WHERE b = %s)) AS u(p)"
    statements = {
        "insert": "INSERT INTO notifier.queue (channel, payload, received_at) "
                  f"SELECT 'replay', p::pg_catalog.jsonb, now() FROM {arr}",
        "insert_noindex": "INSERT INTO public.bench_queue_noindex (channel, payload, received_at) "
                          f"SELECT 'replay', p::pg_catalog.jsonb, now() FROM {arr}",
        "jsonb_parse": f"SELECT count(p::pg_catalog.jsonb) FROM {arr}",
        "json_parse": f"SELECT count(p::pg_catalog.json) FROM {arr}",
        "unnest": f"SELECT count(p) FROM {arr}",
    }
    out = {"events": int(nev), "batches": int(nb), "avg_payload_bytes": float(avg_len), "sample": sample}
    times = {k: [] for k in statements}
    for _ in range(runs):
        for name, sql in statements.items():
            conn.execute("TRUNCATE notifier.queue, public.bench_queue_noindex RESTART IDENTITY")
            conn.execute("CHECKPOINT")
            t = 0.0
            for b in range(int(nb)):
                t0 = now()
                with conn.transaction():
                    conn.execute(sql, (b,))
                t += now() - t0
            times[name].append(t)
    for name, v in times.items():
        out[name + "_s"] = statistics.median(v)
    conn.execute("TRUNCATE notifier.queue RESTART IDENTITY")
    conn.execute("DROP TABLE public.bench_queue_noindex")
    print(json.dumps(out), flush=True)
    conn.close()
    return 0


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def fmt_rate(n, s):
    return f"{n / s:,.0f}" if s else "n/a"


def fmt_s(s):
    return f"{s:.2f}" if s is not None else "n/a"


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def cmd_report(results_path, meta_path):
    meta = json.load(open(meta_path))
    runs = []
    errors = []
    with open(results_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if "error" in r:
                errors.append(r)
            else:
                runs.append(r)

    def sel(workload, mode):
        return [r for r in runs if r["workload"] == workload and r["mode"] == mode]

    def complete_times(rs, key, ok):
        return [r.get(key) if r.get(ok) else None for r in rs]

    W = meta["workloads"]
    lines = []
    p = lines.append
    p("## pg_notifier worker throughput: commit to queue table, against a LISTEN client")
    p("")
    p(f"{meta['date']} · nproc {meta['nproc']} · RAM {meta['ram']} · {meta['pg_version']} · "
      f"pg_notifier {meta['rev']}{meta.get('so', '')} · psycopg {meta['psycopg']} · {meta['runs']} runs per measurement, "
      "median reported")
    p("")
    if meta.get("background"):
        p(f"Machine before the measurements: {meta['background']} (other processes compete for the "
          f"{meta['nproc']} cores: compare with the machine busy column below).")
        p("")
    p(f"One throw-away cluster ({meta['conf_summary']}); database `{meta['db']}` in pg_notifier.databases; "
      f"watched table `{meta['table']}` (`notifier.watch(tbl, payload => 'row')`, default options, "
      f"channel `{meta['channel']}`), one queue route `notifier.add_queue('{meta['channel']}')` into "
      "`notifier.queue`.  Before every measurement both tables are emptied, CHECKPOINT, the NOTIFY "
      "queue is empty and the worker's `notifier.status()` lists (or no longer lists) the channel.")
    p("")
    p(f"- **bulk**: {W['bulk']}")
    p(f"- **pgbench**: {W['pgbench']}")
    p("- **worker → queue**: the route on, nobody else listening; done when the route's `written` "
      "counter (`notifier.route_stats()`, polled every "
      f"{meta['poll_ms']} ms) reaches N, then checked: `count(*)` of notifier.queue = N, ids 1..N, "
      "N distinct row keys in the payloads, and (bulk) the rows in commit order.")
    p("- **LISTEN client**: the route removed; a psycopg client (its own process, autocommit, "
      "`LISTEN` on the channel, reading at the libpq level) counts notifications until it has N "
      "(its own CLOCK_MONOTONIC timestamp).  The worker still reads the NOTIFY stream then "
      "(it listens to its control channel in this database) but writes nothing.")
    p("- **producer alone**: the route removed, no client: the capture cost, which bounds both.")
    p("- Seconds run from t0 = the start of the first COMMIT (bulk) or pgbench's start, to the last "
      "event in the queue table / at the client.  events/s = N ÷ median seconds.")
    p("")

    res_rates = {}
    p("| workload | events | producer alone s | producer alone events/s | worker → queue s | "
      "worker → queue events/s | LISTEN client s | LISTEN client events/s | ratio worker / client |")
    p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for wl in ("bulk", "pgbench"):
        rs_p, rs_w, rs_c = sel(wl, "producer"), sel(wl, "worker"), sel(wl, "client")
        n = (rs_p or rs_w or rs_c or [{"events": 0}])[0]["events"]
        sp = med([r["producer_s"] for r in rs_p])
        sw = med(complete_times(rs_w, "queue_s", "queue_complete"))
        sc = med(complete_times(rs_c, "client_s", "client_complete"))
        ratio = (sc / sw) if sw and sc else None
        res_rates[wl] = (n, sp, sw, sc, ratio)
        tps = med([r.get("tps") for r in rs_p])
        tps_s = f" ({tps:,.0f} tps)" if tps else ""
        p(f"| {wl} | {n:,} | {fmt_s(sp)} | {fmt_rate(n, sp)}{tps_s} | {fmt_s(sw)} | {fmt_rate(n, sw)} | "
          f"{fmt_s(sc)} | {fmt_rate(n, sc)} | {f'{ratio:.2f}' if ratio else 'n/a'} |")
    p("")

    # both at once
    if any(sel(wl, "both") for wl in ("bulk", "pgbench")):
        p("Both at once (route on **and** the LISTEN client listening, same events):")
        p("")
        p("| workload | events | worker → queue s | events/s | vs worker alone | LISTEN client s | events/s | vs client alone |")
        p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for wl in ("bulk", "pgbench"):
            rs = sel(wl, "both")
            if not rs:
                continue
            n, _, sw, sc, _ = res_rates[wl]
            bw = med(complete_times(rs, "queue_s", "queue_complete"))
            bc = med(complete_times(rs, "client_s", "client_complete"))
            p(f"| {wl} | {n:,} | {fmt_s(bw)} | {fmt_rate(n, bw)} | "
              f"{f'{sw / bw:.2f}' if bw and sw else 'n/a'} | {fmt_s(bc)} | {fmt_rate(n, bc)} | "
              f"{f'{sc / bc:.2f}' if bc and sc else 'n/a'} |")
        p("")

    # pgbench tps per mode
    if any(sel("pgbench", m) for m in ("producer", "worker", "client", "both")):
        cells = []
        for m, label in (("producer", "producer alone"), ("worker", "worker"), ("client", "LISTEN client"),
                         ("both", "both")):
            t = med([r.get("tps") for r in sel("pgbench", m)])
            if t:
                cells.append(f"{label} {t:,.0f}")
        p("pgbench tps (median, pgbench's own \"without initial connection time\"): " + " · ".join(cells))
        p("")

    p("Targets (reported, never enforced):")
    n, sp, sw, sc, ratio = res_rates["bulk"]
    rate = n / sw if sw else None
    wcpu = med([r.get("worker_cpu") for r in sel("bulk", "worker")])
    cap = f"; the worker's own cost is {1e6 * wcpu / n:.1f} µs of CPU per event, i.e. at most {n / wcpu:,.0f} " \
          "events/s with a core to itself" if wcpu else ""
    p(f"- bulk transactions into the queue table ≥ 50,000 events/s: measured "
      f"{f'{rate:,.0f}' if rate else 'n/a'} events/s — {'met' if rate and rate >= 50000 else 'not met'}{cap}")
    for wl in ("bulk", "pgbench"):
        n, sp, sw, sc, ratio = res_rates[wl]
        p(f"- {wl}: worker ≥ 0.8 × the LISTEN client's drain rate: measured "
          f"{f'{ratio:.2f}' if ratio else 'n/a'} — {'met' if ratio and ratio >= 0.8 else 'not met'}")
    p("")

    # where the time goes
    p("### Where the time goes (medians)")
    p("")
    p("CPU seconds from /proc/PID/stat (utime + stime) over the measurement; machine busy = share of "
      f"all {meta['nproc']} cores busy (/proc/stat) from t0 to the end; lag = last event in the sink "
      "minus the end of the producer.  Worker samples: the worker's pg_stat_activity state / wait "
      f"event every {meta['poll_ms']} ms (it reports `active` only while forwarding = writing a batch; "
      "reading the NOTIFY queue shows as idle with no wait event; `idle/Extension` is sleeping on its latch).  "
      "Worker events per CPU-second = N ÷ worker CPU s: what the worker could do with a core to itself, "
      "whatever else ran on the machine.  Worker transactions: distinct xmin in notifier.queue (one per "
      "forwarded batch).")
    p("")
    p("| workload | mode | span s | producer s | lag s | worker CPU s | worker µs/event | "
      "worker events per CPU-second | worker busy | worker transactions (events each) | producer backend CPU s | client backend + python CPU s | "
      "machine busy | worker samples |")
    p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for wl in ("bulk", "pgbench"):
        for m in ("producer", "worker", "client", "both"):
            rs = sel(wl, m)
            if not rs:
                continue
            n = rs[0]["events"]
            span = med([r["span_s"] for r in rs])
            prod = med([r["producer_s"] for r in rs])
            lags = [r.get("queue_lag_s") if m in ("worker", "both") else r.get("client_lag_s") for r in rs]
            if m == "both":
                lags = [max(x for x in (r.get("queue_lag_s"), r.get("client_lag_s")) if x is not None)
                        if r.get("queue_lag_s") is not None or r.get("client_lag_s") is not None else None
                        for r in rs]
            lag = med(lags) if m != "producer" else None
            if lag is not None:
                lag = max(lag, 0.0)     # the client may finish before pgbench has exited
            wcpu = med([r.get("worker_cpu") for r in rs])
            pcpu = med([r.get("producer_backend_cpu") for r in rs])
            ccpu = med([(r["client_backend_cpu"] or 0) + r["client_cpu"] for r in rs
                        if r.get("client_cpu") is not None])
            mb = med([r.get("machine_busy") for r in rs])
            xacts = med([r.get("queue_xacts") for r in rs])
            xtext = f"{xacts:.0f} ({n / xacts:,.0f})" if xacts else "–"
            samples = {}
            for r in rs:
                for k, v in r["worker_samples"].items():
                    samples[k] = samples.get(k, 0) + v
            tot = sum(samples.values()) or 1
            shown = [(k, v) for k, v in sorted(samples.items(), key=lambda kv: -kv[1]) if v / tot >= 0.02]
            other = tot - sum(v for _, v in shown)
            stext = ", ".join(f"{k} {100 * v / tot:.0f}%" for k, v in shown)
            if other:
                stext += f", other {100 * other / tot:.0f}%"
            p(f"| {wl} | {m} | {fmt_s(span)} | {fmt_s(prod)} | {fmt_s(lag)} | {fmt_s(wcpu)} | "
              f"{f'{1e6 * wcpu / n:.1f}' if wcpu is not None else 'n/a'} | "
              f"{f'{n / wcpu:,.0f}' if wcpu and m in ('worker', 'both') else '–'} | "
              f"{f'{100 * wcpu / span:.0f}%' if wcpu is not None and span else 'n/a'} | {xtext} | "
              f"{fmt_s(pcpu)} | {fmt_s(ccpu)} | {f'{100 * mb:.0f}%' if mb is not None else 'n/a'} | {stext} |")
    p("")
    sink = meta.get("sink")
    if sink:
        ev = sink["events"]

        def us(x):
            return f"{1e6 * x / ev:.1f}"
        u = sink["unnest_s"]
        p(f"The sink's statement alone: the {ev:,} payloads of one more bulk run (average "
          f"{sink['avg_payload_bytes']:.0f} bytes), replayed server-side in {sink['batches']} batches of "
          f"{meta['sink_batch']:,} (the worker's batch size), one transaction each, median of "
          f"{meta['sink_runs']}.  µs/event net = minus the unnest baseline.  The first event: "
          f"`{sink.get('sample', '?')}`")
        p("")
        p("| statement (per batch) | s | events/s | µs/event net |")
        p("| --- | ---: | ---: | ---: |")
        for key, label in (
                ("insert", "the worker's INSERT: `INSERT INTO notifier.queue (channel, payload, received_at) "
                           "SELECT $1, p::jsonb, $3 FROM unnest($2)`"),
                ("insert_noindex", "the same INSERT into a copy of notifier.queue without indexes"),
                ("jsonb_parse", "`SELECT count(p::jsonb)`: the INSERT's jsonb parsing alone"),
                ("json_parse", "`SELECT count(p::json)`: one validating JSON pass (what json_is_valid() in "
                               "forward.c costs per payload it checks)"),
                ("unnest", "`SELECT count(p)`: unnest alone (baseline)")):
            v = sink[key + "_s"]
            p(f"| {label} | {v:.2f} | {fmt_rate(ev, v)} | {us(v - u) if key != 'unnest' else us(v)} |")
        p("")
    prof = meta.get("perf_report")
    if prof and os.path.exists(prof):
        incl = {}
        for line in open(prof, errors="replace"):
            f = line.split()
            # "   95.68%     0.17%  [.] forward_events   ..."
            if len(f) >= 4 and f[0].endswith("%") and f[1].endswith("%") and f[2] in ("[.]", "[k]"):
                incl.setdefault(f[3], float(f[0][:-1]))
        if not incl.get("forward_events"):
            p(f"(perf recorded the worker, but its profile has no forward_events: see {prof})")
            p("")
        else:
            def pct(name):
                return incl.get(name, 0.0)
            rows = [
                ("reading the NOTIFY queue (listen_collect → ProcessNotifyInterrupt)", pct("listen_collect")),
                ("forwarding (forward_events), of which:", pct("forward_events")),
                ("  checking payloads are JSON in forward.c (json_is_valid: pg_parse_json outside jsonb_in)",
                 max(pct("pg_parse_json") - pct("pg_parse_json_or_ereport"), 0.0)),
                ("  building the text[] argument (construct_array)", pct("construct_array")),
                ("  the INSERT … SELECT (SPI_execute_plan), of which:", pct("SPI_execute_plan")),
                ("    parsing payloads into jsonb (jsonb_in)", pct("jsonb_in")),
                ("    index inserts, 2 btrees (ExecInsertIndexTuples)", pct("ExecInsertIndexTuples")),
                ("    heap inserts (heap_insert)", pct("heap_insert")),
                ("    nextval for id (nextval_internal)", pct("nextval_internal")),
                ("    unnest materialised in a tuplestore (tuplestore_putvalues + gettupleslot)",
                 pct("tuplestore_putvalues") + pct("tuplestore_gettupleslot")),
                ("  WAL records (XLogInsert, everywhere)", pct("XLogInsert")),
            ]
            p(f"Profile of the worker (perf record -g -p PID, {meta.get('perf_samples', '?')} samples) during "
              "the extra bulk run: share of the worker's CPU samples spent in each function and "
              "what it calls (inclusive; the indented rows are part of the row above them).")
            p("")
            p("| worker phase | % of samples |")
            p("| --- | ---: |")
            for label, v in rows:
                p(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {v:.1f} |")
            p("")
            top = []
            for line in open(meta["perf_self"], errors="replace") if meta.get("perf_self") else []:
                f = line.split()
                # "    14.27%  [.] json_lex   ..."
                if len(f) >= 3 and f[0].endswith("%") and f[1] in ("[.]", "[k]") and len(top) < 12:
                    top.append(f"`{f[2]}` {f[0]}")
            if top:
                p("Hottest functions (self time): " + ", ".join(top) + ".")
                p("")
    if meta.get("observations"):
        p("### Observations")
        p("")
        for o in meta["observations"]:
            p(f"- {o}")
        p("")
    if errors:
        p("Errors:")
        for e in errors:
            p(f"- {e['workload']} / {e['mode']}: {e['error']}")
        p("")
    bad = [r for r in runs if (r.get("queue_complete") is False or r.get("client_complete") is False
                                or ("queue_count" in r and r["queue_count"] != r["events"])
                                or r.get("queue_ids_ok") is False
                                or ("queue_distinct_keys" in r and r["queue_distinct_keys"] != r["events"])
                                or r.get("queue_order_errors")
                                or r.get("worker_pid_after") != r.get("worker_pid"))]
    if bad:
        p("Incomplete or inconsistent runs:")
        for r in bad:
            p(f"- {r['workload']} / {r['mode']}: events {r['events']}, queue written "
              f"{r.get('queue_written')} (count(*) {r.get('queue_count')}, ids 1..N "
              f"{r.get('queue_ids_ok')}, distinct row keys {r.get('queue_distinct_keys')}, "
              f"out of commit order {r.get('queue_order_errors')}), client received {r.get('client_count')}, worker pid "
              f"{r.get('worker_pid')} → {r.get('worker_pid_after')}")
        p("")
    p("<details><summary>all runs (seconds)</summary>")
    p("")
    for wl in ("bulk", "pgbench"):
        for m in ("producer", "worker", "client", "both"):
            rs = sel(wl, m)
            if not rs:
                continue
            parts = [f"producer {' '.join(fmt_s(r['producer_s']) for r in rs)}"]
            if m in ("worker", "both"):
                parts.append(f"queue {' '.join(fmt_s(r.get('queue_s')) for r in rs)}")
                parts.append(f"first in queue {' '.join(fmt_s(r.get('queue_first_s')) for r in rs)}")
            if m in ("client", "both"):
                parts.append(f"client {' '.join(fmt_s(r.get('client_s')) for r in rs)}")
                parts.append(f"first at client {' '.join(fmt_s(r.get('client_first_s')) for r in rs)}")
            if wl == "pgbench":
                parts.append("tps " + " ".join(f"{r.get('tps') or 0:.0f}" for r in rs))
            p(f"- {wl} / {m}: " + "; ".join(parts))
    p(f"- {meta.get('queue_usage_note', '')}")
    p("")
    p("</details>")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "listen":
        return cmd_listen(*args)
    if cmd == "measure":
        return cmd_measure(args)
    if cmd == "sink":
        return cmd_sink(*args)
    if cmd == "report":
        return cmd_report(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
