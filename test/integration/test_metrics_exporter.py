#!/usr/bin/python3
"""pg_notifier's metrics through the real postgres_exporter (Debian's
prometheus-postgres-exporter, which test/run installs) with the custom
queries of test/examples/postgres_exporter.yml.

A known workload, on routes of a database of its own:
  m_ok       200 always, 10 events          -> delivered 10, state active
  m_fail     500 always, max_attempts 2, 3  -> retried 3, dead 3, failed 6
  m_pause    paused, then 4 events          -> pending 4, state paused
  m_gone     410, 1 event                   -> dead 1, state disabled
  m_backlog  the worker stopped, 7 events   -> outbox backlog 7 (route and channel)
Then the exporter runs on a free loopback port, logged in as a role that is
no superuser but a member of pg_monitor, and /metrics is scraped: every
metric has the value above, the latencies are those of notifier.stats (in
seconds), pg_up is 1 and the exporter logged no error for our queries.  The
worker is started again at the end (its pid is the new one).

Runs against test/run's cluster (itlib.run_worker_test); needs
/usr/bin/prometheus-postgres-exporter (or PG_NOTIFIER_EXPORTER).  Debian's python3:
    /usr/bin/python3 test/integration/test_metrics_exporter.py
"""

import math
import os
import re
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Step, TestFailure, WorkerCtx, free_port, ident, log,  # noqa: E402
                   run_worker_test, wait_for, worker_status, workers_gone)
from psycopg import sql  # noqa: E402
from recorder import Receiver, always, ok  # noqa: E402

NAME = "test_metrics_exporter"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "150"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_metrics")
ROLE = "notifier_it_exporter"
SETTINGS = {"pg_notifier.retry_base_ms": "50", "pg_notifier.retry_max_ms": "200"}
EXPORTER = os.environ.get("PG_NOTIFIER_EXPORTER", "/usr/bin/prometheus-postgres-exporter")
QUERIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples",
                       "postgres_exporter.yml")
LINE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def value(metrics, name, **labels):
    got = [v for n, lab, v in metrics
           if n == name and all(lab.get(k) == str(x) for k, x in labels.items())]
    if len(got) != 1:
        raise TestFailure(f"{name}{labels}: {len(got)} samples in /metrics, expected 1")
    return got[0]


def counts(db, rid):
    return dict(db.execute("SELECT status, count(*) FROM notifier.deliveries "
                           "WHERE route_id = %s GROUP BY 1", (rid,)).fetchall())


def stats(db, rid, cols):
    return db.execute(sql.SQL("SELECT {} FROM notifier.stats WHERE route_id = %s").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in cols)), (rid,)).fetchone()


def set_databases(admin, dbs):
    admin.execute("ALTER SYSTEM SET pg_notifier.databases = %s" % sql.Literal(dbs).as_string(admin))
    admin.execute("SELECT pg_reload_conf()")


def workload(ctx, R):
    db = ctx.db
    R.on("/ok", ok())
    R.on("/fail", always(500))
    R.on("/pause", ok())
    R.on("/gone", always(410))
    rid = {}
    for ch in ("m_ok", "m_fail", "m_pause", "m_gone", "m_backlog"):
        db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident(ch)))
        db.execute("SELECT notifier.watch(%s, channel => %s)", (ch, ch))
    rid["ok"] = db.execute("SELECT notifier.add_webhook('m_ok', %s)", (R.url("/ok"),)).fetchone()[0]
    rid["fail"] = db.execute("SELECT notifier.add_webhook('m_fail', %s, max_attempts => 2)",
                             (R.url("/fail"),)).fetchone()[0]
    rid["pause"] = db.execute("SELECT notifier.add_webhook('m_pause', %s)",
                              (R.url("/pause"),)).fetchone()[0]
    rid["gone"] = db.execute("SELECT notifier.add_webhook('m_gone', %s)",
                             (R.url("/gone"),)).fetchone()[0]
    rid["backlog"] = db.execute("SELECT notifier.add_webhook('m_backlog', %s)",
                                (R.url("/ok"),)).fetchone()[0]
    db.execute("SELECT notifier.pause_route(%s)", (rid["pause"],))
    db.execute("INSERT INTO m_ok SELECT generate_series(1, 10)")
    db.execute("INSERT INTO m_fail SELECT generate_series(1, 3)")
    db.execute("INSERT INTO m_pause SELECT generate_series(1, 4)")
    db.execute("INSERT INTO m_gone VALUES (1)")
    want = {"ok": {"delivered": 10}, "fail": {"dead": 3}, "pause": {"pending": 4},
            "gone": {"dead": 1}}
    for k, w in want.items():
        wait_for(f"route {k}: {w}", lambda k=k, w=w: (counts(db, rid[k]) == w, counts(db, rid[k])), 30)
    wait_for("route gone disabled", lambda: (stats(db, rid["gone"], ["state"])[0] == "disabled",
                                             stats(db, rid["gone"], ["state"])), 30)
    return rid


def step_metrics(ctx):
    db = ctx.db
    if not os.access(EXPORTER, os.X_OK):
        raise TestFailure(f"{EXPORTER} is missing (apt install prometheus-postgres-exporter)")
    R = ctx.receiver = Receiver("metrics").start()
    rid = workload(ctx, R)

    # the backlog: the worker stopped (the database out of pg_notifier.databases)
    admin = ctx.connect("postgres")
    listed = admin.execute("SHOW pg_notifier.databases").fetchone()[0]
    others = ", ".join(d.strip() for d in listed.split(",") if d.strip() and d.strip() != DB)
    if not others or "*" in listed:
        raise TestFailure(f"pg_notifier.databases = {listed!r}: cannot stop only this worker")
    set_databases(admin, others)
    n, _ = workers_gone(admin, [DB], 30)
    if n:
        raise TestFailure(f"the worker of {DB} still runs 30 s after it left pg_notifier.databases")
    db.execute("INSERT INTO m_backlog SELECT generate_series(1, 7)")

    admin.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident(ROLE)))
    admin.execute(sql.SQL("GRANT pg_monitor TO {}").format(ident(ROLE)))
    ctx.check(not admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                                (ROLE,)).fetchone()[0], f"{ROLE} is a superuser")
    port = free_port()
    pgport = admin.execute("SHOW port").fetchone()[0]
    dsn = f"postgresql://{ROLE}@127.0.0.1:{pgport}/{DB}?sslmode=disable"
    env = dict(os.environ, DATA_SOURCE_NAME=dsn)
    proc = subprocess.Popen([EXPORTER, f"--extend.query-path={QUERIES}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def scrape():
            if proc.poll() is not None:
                raise TestFailure(f"the exporter exited ({proc.returncode}): {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    text = r.read().decode()
            except OSError as ex:
                return False, str(ex)
            return "pg_notifier_route_delivered" in text, text[-300:]
        wait_for("the exporter's /metrics with pg_notifier_route_delivered", scrape, 30, 0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        m = parse_metrics(text)
        ours = [line for line in text.splitlines() if line.startswith("pg_notifier")]
        log(f"{len(ours)} pg_notifier lines in /metrics, for instance:")
        shown = [("pg_notifier_outbox", None), ("pg_notifier_route_dead", "gone"),
                 ("pg_notifier_route_delivered", "ok"), ("pg_notifier_route_failed", "fail"),
                 ("pg_notifier_route_latency", "ok"), ("pg_notifier_route_pending", "pause"),
                 ("pg_notifier_route_state", "gone")]
        for line in ours:
            if any(line.startswith(p) and (k is None or f'route_id="{rid[k]}"' in line)
                   for p, k in shown):
                log(f"  {line}")

        ctx.check(value(m, "pg_up") == 1, "pg_up is not 1")
        expect = [
            ("pg_notifier_route_delivered", "ok", 10),
            ("pg_notifier_route_failed", "ok", 0),
            ("pg_notifier_route_dead", "ok", 0),
            ("pg_notifier_route_pending", "ok", 0),
            ("pg_notifier_route_delivered", "fail", 0),
            ("pg_notifier_route_retried", "fail", 3),
            ("pg_notifier_route_dead", "fail", 3),
            ("pg_notifier_route_failed", "fail", 6),
            ("pg_notifier_route_pending", "pause", 4),
            ("pg_notifier_route_delivered", "pause", 0),
            ("pg_notifier_route_dead", "gone", 1),
            ("pg_notifier_route_failed", "gone", 1),
            ("pg_notifier_route_outbox_events", "backlog", 7),
            ("pg_notifier_route_outbox_events", "ok", 0),
        ]
        for name, k, want in expect:
            got = value(m, name, route_id=rid[k])
            ctx.check(got == want, f"{name} of route {k}: {got}, expected {want}")
        for k, st in (("ok", "active"), ("fail", "active"), ("pause", "paused"),
                      ("gone", "disabled"), ("backlog", "active")):
            for s in ("active", "paused", "disabled"):
                got = value(m, "pg_notifier_route_state", route_id=rid[k], state=s)
                ctx.check(got == (1 if s == st else 0),
                          f"pg_notifier_route_state of route {k}, state {s}: {got}")
        ctx.check(value(m, "pg_notifier_outbox_events", channel="m_backlog") == 7,
                  "pg_notifier_outbox_events of m_backlog is not 7")
        ctx.check(value(m, "pg_notifier_outbox_oldest_age_seconds", channel="m_backlog") > 0,
                  "pg_notifier_outbox_oldest_age_seconds of m_backlog is not > 0")
        ctx.check(value(m, "pg_notifier_route_outbox_oldest_age_seconds", route_id=rid["backlog"]) > 0,
                  "pg_notifier_route_outbox_oldest_age_seconds of the backlog route is not > 0")
        p50, p99 = stats(db, rid["ok"], ["latency_p50_ms", "latency_p99_ms"])
        for name, ms in (("pg_notifier_route_latency_p50_seconds", p50),
                         ("pg_notifier_route_latency_p99_seconds", p99)):
            got = value(m, name, route_id=rid["ok"])
            ctx.check(ms is not None and ms > 0 and math.isclose(got, ms / 1000.0, rel_tol=1e-6),
                      f"{name} of route ok: {got}, notifier.stats says {ms} ms")
        ctx.check(math.isnan(value(m, "pg_notifier_route_latency_p50_seconds", route_id=rid["pause"])),
                  "latency of a route that delivered nothing is not NaN")
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    errors = [line for line in out.splitlines() if "level=error" in line or "level=warn" in line]
    ctx.check(not errors, f"the exporter logged: {errors[:3]}")

    # the worker back, for run_worker_test's last check
    set_databases(admin, f"{others}, {DB}")
    s, _ = wait_for("the worker back", lambda: (lambda s: (s is not None and s["pid"] is not None, s))(
        worker_status(db, DB)), 30)
    ctx.worker_pid = s["pid"]
    wait_for("the backlog delivered", lambda: (counts(db, rid["backlog"]) == {"delivered": 7},
                                               counts(db, rid["backlog"])), 30)
    ctx.result("postgres_exporter (as a pg_monitor role) shows delivered, failed, dead, pending, "
               "latency p50/p99, state and outbox backlog with the workload's values")


STEPS = [Step("metrics", "the exporter's /metrics after a known workload", step_metrics)]


if __name__ == "__main__":
    run_worker_test(NAME, STEPS, WorkerCtx(), DB, SETTINGS, roles=(ROLE,), timeout=TIMEOUT)
