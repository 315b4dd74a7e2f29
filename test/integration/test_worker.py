#!/usr/bin/python3
"""Integration test of pg_notifier's forwarding worker: routes, queue sink, pop, status.

Runs against a cluster started with shared_preload_libraries = pg_notifier
(test/run does that).  It creates two databases of its own, adds them to
pg_notifier.databases (ALTER SYSTEM + pg_reload_conf()) and checks:

  [start]    the worker of the test database starts, shows in notifier.status()
             and in pg_stat_activity (backend_type 'pg_notifier worker', its
             database, the bootstrap superuser); the second database has a worker
             of its own (status() is read from there, so that it can be watched
             while the extension is dropped in the first);
  [ext]      DROP EXTENSION -> 'waiting for extension', same pid (no crash loop);
             CREATE EXTENSION -> 'listening' again at once;
  [bad]      bad inputs to add_queue / remove_route / pop, and a non-superuser,
             are answered with clear errors (the messages are printed);
  [live]     add_queue / remove_route take effect live: the channel appears in
             status().channels, watched-table events and raw NOTIFYs land in
             notifier.queue exactly as a LISTEN client saw them; after
             remove_route nothing more is written; raw payloads that are not JSON
             become JSON strings;
  [two]      two routes on one channel (notifier.queue and a custom queue table
             with payload json and extra columns) both hold every event of a
             mixed, concurrent workload (3 connections, a few thousand events),
             equal to what a LISTEN client saw: same count, payloads, order;
  [oversize] an event over pg_notifier.max_payload_bytes reaches LISTEN clients as
             {"ref":N,"truncated":true} and the queue as the full event,
             equal to notifier.payload(N);
  [pop]      notifier.pop() with 4 concurrent consumers while events are produced:
             every event exactly once;
  [burst]    1,000,000 events from 4 connections all arrive in the queue, while
             pg_notification_queue_usage() stays near zero (sampled every 0.2 s);
  [stats]    notifier.stats: per route received = written = what was sent,
             errors 0, last_event_at set; the worker never restarted meanwhile.

On exit (also on failure) pg_notifier.databases is reset and the databases and
the role are dropped.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER...).  Run it with
Debian's python3 (psycopg 3.1).  Environment knobs: PG_NOTIFIER_TEST_TIMEOUT
(watchdog, seconds), PG_NOTIFIER_TEST_BURST (events of the burst, default
1000000).

Its watches use delivery => 'notify' (0.1's default): the worker's in-process
LISTEN path, hand-written NOTIFYs routed too.  The default, 'auto', is tested
by test_durability.py.
"""

import json
import os
import random
import sys
import threading
import time
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Checks, Listener, Step, TestFailure, Threads, as_event, canon, connect,  # noqa: E402
                   describe_error, drop_databases, expect_error, ident, log, main, new_database,
                   parse, short, text_of, wait_for)

NAME = "test_worker"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "260"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_worker")
DB_B = DB + "_b"
ROLE = "notifier_it_worker_user"          # role names beginning pg_ are reserved
WORKER_TYPE = "pg_notifier worker"
LAUNCHER_TYPE = "pg_notifier launcher"
RUNNING = ("listening", "forwarding")
BURST = int(os.environ.get("PG_NOTIFIER_TEST_BURST", "1000000"))
BURST_CONNS = 4
BURST_TXN = 10_000
POP_EVENTS = 10_000
POP_CONSUMERS = 4
MAX_USAGE = 0.05
# pg_notification_queue_usage() is pages used / 2^20 pages of 8 kB (PostgreSQL 15)
QUEUE_BYTES = (1 << 20) * 8192


# ---------------------------------------------------------------- JSON helpers

# ------------------------------------------------------------ database helpers

class Ctx(Checks):
    def __init__(self):
        super().__init__()
        self.worker_pid = None       # of DB's worker, from step [ext] on
        self.expected = {}           # route id -> (channel, target, events sent to it)
        self.obs = None              # connection to DB_B: status() while DB has no extension
        self.db = None               # superuser connection to DB
        # pg_notifier.databases, reset at the end (step [start] sets it)
        self.saved = {"pg_notifier.databases": None}

    def status(self, dbname=DB):
        cur = self.obs.cursor(row_factory=dict_row)
        cur.execute("SELECT * FROM notifier.status() WHERE database = %s", (dbname,))
        rows = cur.fetchall()
        if len(rows) > 1:
            raise TestFailure(f"notifier.status() has {len(rows)} rows for database {dbname}")
        return rows[0] if rows else None

    def wait_state(self, states, timeout, dbname=DB, desc=None):
        def probe():
            s = self.status(dbname)
            return (s is not None and s["pid"] is not None and s["state"] in states), s
        return wait_for(desc or f"worker of {dbname} in state {'/'.join(states)}",
                        probe, timeout)

    def wait_channels(self, present=(), absent=(), timeout=10):
        def probe():
            s = self.status()
            chans = (s or {}).get("channels") or []
            ok = all(c in chans for c in present) and not any(c in chans for c in absent)
            return ok, s
        return wait_for(f"status().channels with {list(present)} and without {list(absent)}",
                        probe, timeout, interval=0.01)


def queue_rows(conn, channel, table="notifier.queue", key="id"):
    t = sql.SQL(".").join(ident(p) for p in table.split("."))
    cur = conn.execute(sql.SQL("SELECT {}, payload::text FROM {} WHERE channel = %s ORDER BY {}")
                       .format(ident(key), t, ident(key)), (channel,))
    return cur.fetchall()


def queue_count(conn, channel, table="notifier.queue"):
    t = sql.SQL(".").join(ident(p) for p in table.split("."))
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE channel = %s").format(t),
                        (channel,)).fetchone()[0]


def wait_queued(conn, channel, value, timeout, table="notifier.queue"):
    """Wait until the queue table holds the JSON string value on channel."""
    t = sql.SQL(".").join(ident(p) for p in table.split("."))
    q = sql.SQL("SELECT count(*) FROM {} WHERE channel = %s "
                "AND payload::jsonb = to_jsonb(%s::text)").format(t)
    return wait_for(f"{value!r} on {channel!r} in {table}",
                    lambda: (conn.execute(q, (channel, value)).fetchone()[0] > 0, None),
                    timeout, interval=0.02)[1]


def compare_stream(ctx, what, heard, rows):
    """heard: payloads a LISTEN client got, in order; rows: (id, payload text) of
    the queue, in id order.  Same count, same JSON values, same order."""
    ok = ctx.check(len(rows) == len(heard),
                   f"{what}: {len(rows)} rows in the queue, the LISTEN client got {len(heard)}")
    bad = 0
    for i, (p, (rid, text)) in enumerate(zip(heard, rows)):
        try:
            got = canon(parse(text))
        except ValueError as ex:
            got = f"<not JSON: {ex}>"
        want = as_event(p)
        if got != want:
            bad += 1
            if bad <= 3:
                ctx.check(False, f"{what}: event #{i + 1} (queue id {rid}) differs:\n"
                                 f"        heard  {short(p, 300)}\n"
                                 f"        queued {short(text, 300)}")
    if bad > 3:
        ctx.check(False, f"{what}: ... {bad} events differ in all")
    return ok and not bad


# ----------------------------------------------------------------------- steps

def step_start(ctx, admin):
    spl = admin.execute("SHOW shared_preload_libraries").fetchone()[0]
    if "pg_notifier" not in spl:
        raise TestFailure(f"shared_preload_libraries = {spl!r}: the cluster must preload pg_notifier")
    launcher = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = %s",
                             (LAUNCHER_TYPE,)).fetchone()[0]
    ctx.check(launcher == 1, f"{launcher} processes with backend_type {LAUNCHER_TYPE!r}, expected 1")

    t0 = time.monotonic()
    admin.execute(sql.SQL("ALTER SYSTEM SET pg_notifier.databases = {}")
                  .format(sql.Literal(f"postgres, {DB}, {DB_B}")))
    admin.execute("SELECT pg_reload_conf()")
    log(f"pg_notifier.databases = 'postgres, {DB}, {DB_B}', configuration reloaded")

    # DB has no extension yet: its worker must wait for it
    s, secs = ctx.wait_state(("waiting for extension",), 30)
    ctx.timing("worker started (no extension yet) after", f"{time.monotonic() - t0:.2f} s")
    log(f"status(): {DB}: pid {s['pid']}, state {s['state']!r}, started_at {s['started_at']}, "
        f"channels {s['channels']}, last_error {s['last_error']!r}")
    sb, _ = ctx.wait_state(RUNNING, 30, dbname=DB_B)
    log(f"status(): {DB_B}: pid {sb['pid']}, state {sb['state']!r}")
    ctx.check(s["started_at"] is not None, "status().started_at is NULL for a running worker")
    ctx.check(s["pid"] != sb["pid"], f"the two databases share worker pid {s['pid']}")

    bootstrap = admin.execute("SELECT rolname FROM pg_authid WHERE oid = 10").fetchone()[0]
    for dbname, st in ((DB, s), (DB_B, sb)):
        rows = admin.execute(
            "SELECT pid, application_name, usename FROM pg_stat_activity "
            "WHERE backend_type = %s AND datname = %s", (WORKER_TYPE, dbname)).fetchall()
        if ctx.check(len(rows) == 1, f"pg_stat_activity: {len(rows)} rows with backend_type "
                                     f"{WORKER_TYPE!r} and datname {dbname!r}, expected 1: {rows}"):
            pid, app, user = rows[0]
            ctx.check(pid == st["pid"], f"{dbname}: pg_stat_activity pid {pid} != status() pid {st['pid']}")
            ctx.check(app == WORKER_TYPE, f"{dbname}: worker application_name {app!r}")
            ctx.check(user == bootstrap, f"{dbname}: worker runs as {user!r}, expected {bootstrap!r}")
    log(f"pg_stat_activity: one {WORKER_TYPE!r} per database, pids match status(), user {bootstrap}")

    # the postgres database (in the list, default) keeps its own worker
    sp = ctx.status("postgres")
    ctx.check(sp is not None and sp["pid"] not in (None, s["pid"], sb["pid"]),
              f"status() row of database postgres: {sp}")

    pid0 = s["pid"]
    t0 = time.monotonic()
    ctx.db.execute("CREATE EXTENSION pg_notifier")
    s, _ = ctx.wait_state(RUNNING, 10, desc="worker listening after CREATE EXTENSION")
    ctx.timing("CREATE EXTENSION -> listening in", f"{time.monotonic() - t0:.3f} s")
    ctx.check(s["pid"] == pid0, f"worker pid changed from {pid0} to {s['pid']} on CREATE EXTENSION")
    ctx.worker_pid = s["pid"]


def step_ext(ctx, admin):
    pid0 = ctx.worker_pid
    pids = set()

    def probe():
        s = ctx.status()
        if s is not None:
            pids.add(s["pid"])
        return (s is not None and s["state"] == "waiting for extension"), s

    t0 = time.monotonic()
    ctx.db.execute("DROP EXTENSION pg_notifier")
    s, secs = wait_for("state 'waiting for extension' after DROP EXTENSION", probe, 20, 0.1)
    ctx.timing("DROP EXTENSION -> waiting for extension in", f"{secs:.2f} s")
    log(f"status(): state {s['state']!r}, channels {s['channels']}, last_error {s['last_error']!r}")
    # stay a moment: a crash loop would show as a new pid or another state
    t1 = time.monotonic()
    while time.monotonic() - t1 < 2:
        probe()
        time.sleep(0.1)
    s = ctx.status()
    ctx.check(s["state"] == "waiting for extension", f"state then became {s['state']!r}")
    ctx.check(pids == {pid0}, f"worker pid(s) {sorted(p for p in pids if p)} during DROP EXTENSION, "
                              f"expected only {pid0} (no restart)")
    ctx.check(not s["channels"], f"no extension, yet status().channels = {s['channels']}")
    alive = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND backend_type = %s",
                          (pid0, WORKER_TYPE)).fetchone()[0]
    ctx.check(alive == 1, f"worker pid {pid0} not in pg_stat_activity after DROP EXTENSION")

    t0 = time.monotonic()
    ctx.db.execute("CREATE EXTENSION pg_notifier")
    s, _ = ctx.wait_state(RUNNING, 10, desc="worker listening after CREATE EXTENSION again")
    ctx.timing("CREATE EXTENSION (again) -> listening in", f"{time.monotonic() - t0:.3f} s")
    ctx.check(s["pid"] == pid0, f"worker pid changed from {pid0} to {s['pid']}")


BAD_TABLES = """
    CREATE VIEW bad_view AS SELECT 'c'::text AS channel, '{}'::jsonb AS payload;
    CREATE SEQUENCE bad_seq;
    CREATE TABLE bad_nopayload (channel text, data jsonb);
    CREATE TABLE bad_intpayload (channel text, payload int);
    CREATE TABLE bad_notnull (channel text, payload jsonb, mandatory int NOT NULL);
    CREATE TABLE bad_nochannel (payload jsonb, received_at timestamptz);
    CREATE TABLE bad_received (channel text, payload jsonb, received_at text);
    CREATE TABLE role_q (channel text, payload jsonb, received_at timestamptz DEFAULT now());
"""


def step_bad(ctx, admin):
    db = ctx.db
    db.execute(BAD_TABLES)
    n_routes = db.execute("SELECT count(*) FROM notifier.routes").fetchone()[0]
    E = lambda *a, **k: expect_error(ctx, db, *a, **k)   # noqa: E731
    E("add_queue(NULL)", "SELECT notifier.add_queue(NULL)",
      need=[["channel"]], codes=("22004",))
    E("add_queue('c', NULL)", "SELECT notifier.add_queue('it_bad', NULL)",
      need=[["queue", "table"]], codes=("22004",))
    E("add_queue('')", "SELECT notifier.add_queue('')",
      need=[["channel"]], codes=("22023",))
    E("add_queue(<64 ASCII bytes>)", "SELECT notifier.add_queue(%s)", ("c" * 64,),
      need=[["channel"], ["63", "64", "long", "byte"]], codes=("22023",))
    E("add_queue(<32 x 'é' = 64 bytes>)", "SELECT notifier.add_queue(%s)", ("é" * 32,),
      need=[["channel"], ["63", "64", "long", "byte"]], codes=("22023",))
    E("add_queue('c', 'no_such_table')", "SELECT notifier.add_queue('it_bad', 'no_such_table')",
      need=[["no_such_table"], ["does not exist"]], codes=("42P01",))
    E("add_queue('c', <a view>)", "SELECT notifier.add_queue('it_bad', 'bad_view')",
      need=[["table", "view"]], name="bad_view")
    E("add_queue('c', <a sequence>)", "SELECT notifier.add_queue('it_bad', 'bad_seq')",
      need=[["table", "sequence"]], name="bad_seq")
    E("add_queue('c', <no payload column>)", "SELECT notifier.add_queue('it_bad', 'bad_nopayload')",
      need=[["payload"]], name="bad_nopayload")
    E("add_queue('c', <payload int>)", "SELECT notifier.add_queue('it_bad', 'bad_intpayload')",
      need=[["payload"], ["json", "type"]], name="bad_intpayload")
    E("add_queue('c', <NOT NULL column, no default>)",
      "SELECT notifier.add_queue('it_bad', 'bad_notnull')",
      need=[["mandatory"]], name="bad_notnull")
    E("add_queue('c', <no channel column>)", "SELECT notifier.add_queue('it_bad', 'bad_nochannel')",
      need=[["channel"]], name="bad_nochannel")
    E("add_queue('c', <received_at text>)", "SELECT notifier.add_queue('it_bad', 'bad_received')",
      need=[["received_at"]], name="bad_received")
    E("remove_route(NULL)", "SELECT notifier.remove_route(NULL)",
      need=[["null", "id", "route"]], codes=("22004",))
    E("remove_route(999999)", "SELECT notifier.remove_route(999999)",
      need=[["999999"]], codes=("P0002", "42704"))
    E("pop(max => 0)", "SELECT * FROM notifier.pop('it_bad', max => 0)",
      need=[["max"]], codes=("22023",))
    E("pop(max => NULL)", "SELECT * FROM notifier.pop('it_bad', max => NULL)",
      need=[["max"]], codes=("22023",))
    E("pop(max => -5)", "SELECT * FROM notifier.pop('it_bad', max => -5)",
      need=[["max"]], codes=("22023",))
    n = db.execute("SELECT count(*) FROM notifier.routes").fetchone()[0]
    ctx.check(n == n_routes, f"failed add_queue calls left {n - n_routes} rows in notifier.routes")

    # the limits themselves are fine: a 63-byte channel (also in multibyte form)
    for ch in ("c" * 63, "é" * 31 + "x"):
        rid = db.execute("SELECT notifier.add_queue(%s)", (ch,)).fetchone()[0]
        db.execute("SELECT notifier.remove_route(%s)", (rid,))
        E(f"remove_route({rid}) a second time", "SELECT notifier.remove_route(%s)", (rid,),
          need=[[str(rid)]], codes=("P0002", "42704"))
    log("63-byte channels accepted (and removed)")

    # a non-superuser
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(ROLE)))
    with connect(DB, user=ROLE) as u:
        U = lambda *a, **k: expect_error(ctx, u, *a, **k)   # noqa: E731
        U("non-superuser: add_queue('c')", "SELECT notifier.add_queue('it_role')",
          need=[["permission denied"]], codes=("42501",))
        U("non-superuser: remove_route(1)", "SELECT notifier.remove_route(1)",
          need=[["permission denied"]], codes=("42501",))
        U("non-superuser: SELECT notifier.routes", "SELECT * FROM notifier.routes",
          need=[["permission denied"]], codes=("42501",))
        U("non-superuser: SELECT notifier.route_list", "SELECT * FROM notifier.route_list",
          need=[["permission denied"]], codes=("42501",))
        U("non-superuser: SELECT notifier.stats", "SELECT * FROM notifier.stats",
          need=[["permission denied"]], codes=("42501",))
        U("non-superuser: notifier.status()", "SELECT * FROM notifier.status()",
          need=[["permission denied"]], codes=("42501",))
        # "Managing routes needs superuser or an explicit GRANT EXECUTE"
        db.execute(sql.SQL("GRANT EXECUTE ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer), "
                           "notifier.remove_route(bigint) TO {}").format(ident(ROLE)))
        U("EXECUTE granted, no INSERT on notifier.queue",
          "SELECT notifier.add_queue('it_role')",
          need=[["permission denied"]], codes=("42501",))
        db.execute(sql.SQL("GRANT INSERT ON role_q TO {}").format(ident(ROLE)))
        try:
            rid = u.execute("SELECT notifier.add_queue('it_role', 'public.role_q')").fetchone()[0]
            u.execute("SELECT notifier.remove_route(%s)", (rid,))
            log("non-superuser with GRANT EXECUTE + INSERT on its queue table: "
                "add_queue and remove_route work")
        except psycopg.Error as ex:
            ctx.check(False, "non-superuser granted EXECUTE on add_queue/remove_route and INSERT "
                             f"on its queue table cannot add/remove a route: {describe_error(ex)}")
        db.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer), "
                           "notifier.remove_route(bigint) FROM {}").format(ident(ROLE)))
        db.execute("DELETE FROM notifier.routes WHERE channel = 'it_role'")


RAW_CASES = [                       # (NOTIFY payload, what the queue must hold)
    ('{"raw": 1, "nested": {"a": [1, 2.50, null, true]}}',
     {"raw": 1, "nested": {"a": [1, Decimal("2.5"), None, True]}}),
    ("not json", "not json"),
    ("", ""),
    ("42", 42),
    ('"quoted"', "quoted"),
    ("null", None),
    ("[1, \"a\"]", [1, "a"]),
    ('{"a": 1', '{"a": 1'),
    ("NaN", "NaN"),
    ("  {\"ws\": true}\n", {"ws": True}),
]


def step_live(ctx, admin):
    db = ctx.db
    db.execute("CREATE TABLE live_t (id int PRIMARY KEY, v text)")
    db.execute("SELECT notifier.watch('live_t', channel => 'it_live', delivery => 'notify')")
    lis = Listener(DB, ["it_live", "it_sentinel"])
    try:
        t0 = time.monotonic()
        r_sent = db.execute("SELECT notifier.add_queue('it_sentinel')").fetchone()[0]
        r_live = db.execute("SELECT notifier.add_queue('it_live')").fetchone()[0]
        s, _ = ctx.wait_channels(present=("it_live", "it_sentinel"))
        ctx.timing("add_queue -> channel in status().channels in", f"{time.monotonic() - t0:.3f} s")
        chans = s["channels"]
        ctx.check(chans == sorted(chans), f"status().channels not sorted: {chans}")
        ctx.check("pg_notifier_control" not in chans, "status().channels lists the control channel")
        rl = db.execute("SELECT id, channel, kind, target FROM notifier.route_list "
                        "WHERE id = %s", (r_live,)).fetchall()
        ctx.check(rl == [(r_live, "it_live", "queue", "notifier.queue")], f"route_list row: {rl}")
        ctx.expected[r_sent] = ["it_sentinel", "notifier.queue", 0]

        # table events and raw NOTIFYs, each its own transaction
        db.execute("INSERT INTO live_t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        db.execute("UPDATE live_t SET v = 'B' WHERE id = 2")
        db.execute("DELETE FROM live_t WHERE id = 3")
        for p, _ in RAW_CASES:
            db.execute("SELECT pg_notify('it_live', %s)", (p,))
        db.execute("NOTIFY it_live, 'END-1'")
        heard = [n[1] for n in lis.until(lambda c, p: p == "END-1", 20, "END-1")
                 if n[0] == "it_live"]
        n_events = 5 + len(RAW_CASES) + 1
        ctx.check(len(heard) == n_events, f"LISTEN client heard {len(heard)} events, expected {n_events}")
        wait_queued(db, "it_live", "END-1", 10)
        rows = queue_rows(db, "it_live")
        compare_stream(ctx, "route it_live vs LISTEN", heard, rows)
        ops = [canon(parse(t)).get("op") for _, t in rows[:5]]
        ctx.check(ops == ["INSERT"] * 3 + ["UPDATE", "DELETE"], f"ops in the queue: {ops}")
        got_raw = [canon(parse(t)) for _, t in rows[5:5 + len(RAW_CASES)]]
        for (p, want), got in zip(RAW_CASES, got_raw):
            ctx.check(got == canon(want), f"raw NOTIFY {p!r} queued as {got!r}, expected {want!r}")
        log(f"{len(rows)} events in notifier.queue equal to the LISTEN client's "
            f"(3 INSERT, UPDATE, DELETE, {len(RAW_CASES)} raw payloads, e.g. 'not json' -> "
            f"{json.dumps(got_raw[1]) if len(got_raw) > 1 else '?'})")
        n_live = len(rows)
        ctx.expected[r_live] = ["it_live", "notifier.queue", n_live]

        # remove the route: the channel goes, later events are not written
        t0 = time.monotonic()
        db.execute("SELECT notifier.remove_route(%s)", (r_live,))
        del ctx.expected[r_live]
        ctx.wait_channels(present=("it_sentinel",), absent=("it_live",))
        ctx.timing("remove_route -> channel gone from status().channels in",
                   f"{time.monotonic() - t0:.3f} s")
        db.execute("INSERT INTO live_t VALUES (4, 'after removal')")
        db.execute("NOTIFY it_live, 'after removal'")
        db.execute("NOTIFY it_sentinel, 'S-1'")
        ctx.expected[r_sent][2] += 1
        after = lis.until(lambda c, p: p == "S-1", 20, "S-1")
        ctx.check(sum(1 for n in after if n[0] == "it_live") == 2,
                  f"LISTEN client: events after the removal: {after}")
        wait_queued(db, "it_sentinel", "S-1", 10)
        n = queue_count(db, "it_live")
        ctx.check(n == n_live, f"{n - n_live} events written to notifier.queue after remove_route")
        log("after remove_route: nothing written for it_live (sentinel on it_sentinel arrived)")

        # and back again
        r_live2 = db.execute("SELECT notifier.add_queue('it_live')").fetchone()[0]
        ctx.wait_channels(present=("it_live", "it_sentinel"))
        db.execute("INSERT INTO live_t VALUES (5, 'again')")
        db.execute("NOTIFY it_live, 'END-2'")
        wait_queued(db, "it_live", "END-2", 10)
        rows = queue_rows(db, "it_live")[n_live:]
        ev = [canon(parse(t)) for _, t in rows]
        ctx.check(len(ev) == 2 and isinstance(ev[0], dict) and ev[0].get("key") == {"id": 5},
                  f"after adding the route again: {ev}")
        ctx.expected[r_live2] = ["it_live", "notifier.queue", 2]

        # "valid" JSON that jsonb refuses: must not be lost, must not stop the worker
        db.execute("SELECT pg_notify('it_live', %s)", ('{"nul": "\\u0000"}',))
        db.execute("NOTIFY it_live, 'END-3'")
        try:
            wait_queued(db, "it_live", "END-3", 10)
            rows = queue_rows(db, "it_live")[n_live + 2:]
            ctx.check(len(rows) == 2, "payload '{\"nul\": \"\\u0000\"}' (json yes, jsonb no): "
                                      f"{len(rows) - 1} rows for it (lost?): {rows}")
            log(f"payload with \\u0000 queued as {rows[0][1] if len(rows) == 2 else '(nothing)'}")
            ctx.expected[r_live2][2] += 2
        except TestFailure as ex:
            ctx.check(False, f"after NOTIFY it_live, '{{\"nul\": \"\\u0000\"}}' the worker "
                             f"stopped writing: {ex}")
            ctx.expected[r_live2][2] = None

        # quoted identifiers (mixed-case channel with a space and a dot, queue table
        # in a quoted schema, without received_at) next to a route whose queue table
        # is dropped: that route's events are dead letters, the channel's other route goes on
        db.execute("""CREATE SCHEMA "Odd Schema";
                      CREATE TABLE "Odd Schema"."Odd Q" (payload jsonb NOT NULL, channel text);
                      CREATE TABLE dropme (channel text NOT NULL, payload json NOT NULL)""")
        ch = "It Mixed.Ch"
        with db.transaction():
            r_odd = db.execute("SELECT notifier.add_queue(%s, '\"Odd Schema\".\"Odd Q\"')",
                               (ch,)).fetchone()[0]
            r_drop = db.execute("SELECT notifier.add_queue(%s, 'dropme')", (ch,)).fetchone()[0]
        ctx.wait_channels(present=(ch,))
        db.execute("SELECT pg_notify(%s, '{\"n\": 1}')", (ch,))
        db.execute("DROP TABLE dropme")
        db.execute("SELECT pg_notify(%s, '{\"n\": 2}')", (ch,))
        db.execute("SELECT pg_notify(%s, 'END-odd')", (ch,))
        try:
            wait_queued(db, ch, "END-odd", 10, table="Odd Schema.Odd Q")
            got = [canon(parse(t)) for (t,) in db.execute(
                'SELECT payload::text FROM "Odd Schema"."Odd Q" WHERE channel = %s '
                'ORDER BY ctid', (ch,)).fetchall()]
            ctx.check(got == [{"n": 1}, {"n": 2}, "END-odd"],
                      f"route {ch!r} -> \"Odd Schema\".\"Odd Q\" holds {got}")
            # its events are dead letters (kept, with the reason), not lost
            st = db.execute("SELECT received, written, dead, last_error FROM notifier.stats "
                            "WHERE route_id = %s", (r_drop,)).fetchone()
            nd = db.execute("SELECT count(*) FROM notifier.dead_letters WHERE route_id = %s",
                            (r_drop,)).fetchone()[0]
            log(f"route to the dropped table: received/written/dead {st[:3]}, "
                f"last_error {st[3]!r}, {nd} dead letters")
            ctx.check(st is not None and st[0] == 3 and st[1] <= 1 and st[2] >= 1 and st[3]
                      and st[1] + st[2] == 3 and nd == st[2],
                      f"stats of the route whose queue table was dropped: {st}, {nd} dead letters")
            log(f"channel {ch!r} into \"Odd Schema\".\"Odd Q\": all 3 events, although the "
                f"channel's other queue table was dropped")
            ctx.expected[r_odd] = [ch, '"Odd Schema"."Odd Q"', 3]
        except TestFailure as ex:
            ctx.check(False, f"route {ch!r} into \"Odd Schema\".\"Odd Q\": {ex}")
        db.execute("SELECT notifier.remove_route(%s)", (r_drop,))

        s = ctx.status()
        ctx.check(s["pid"] == ctx.worker_pid, f"worker pid changed: {ctx.worker_pid} -> {s['pid']}")
    finally:
        lis.close()


MIX_TABLES = """
    CREATE TABLE mix_a (id int PRIMARY KEY, n int, s text);
    CREATE TABLE mix_b (id int PRIMARY KEY, data jsonb, t timestamptz, note text);
    CREATE TABLE custom_q (
        qid         bigserial PRIMARY KEY,
        note        text,
        payload     json NOT NULL,
        channel     text NOT NULL,
        extra       int NOT NULL DEFAULT 7,
        received_at timestamptz NOT NULL DEFAULT now(),
        tag         text);
    SELECT notifier.watch('mix_a', channel => 'it_two', delivery => 'notify');
    SELECT notifier.watch('mix_b', channel => 'it_two', payload => 'full', delivery => 'notify');
"""


def mixed_producer(k, txns):
    rnd = random.Random(1000 + k)
    base = k * 1_000_000
    a_ids, b_ids = [], []
    nxt = base + 1
    with connect(DB, autocommit=False) as c:
        for t in range(txns):
            n = rnd.randint(5, 25)
            c.execute("INSERT INTO mix_a SELECT g, g %% 97, md5(g::text) "
                      "FROM generate_series(%s::int, %s::int) g", (nxt, nxt + n - 1))
            new = list(range(nxt, nxt + n))
            nxt += n
            if a_ids:
                upd = rnd.sample(a_ids, min(len(a_ids), rnd.randint(1, 10)))
                c.execute("UPDATE mix_a SET n = n + 1, s = s || 'u' WHERE id = ANY(%s)", (upd,))
                dele = rnd.sample(a_ids, min(len(a_ids), rnd.randint(0, 4)))
                c.execute("DELETE FROM mix_a WHERE id = ANY(%s)", (dele,))
            else:
                dele = []
            bid = base + 500_000 + t
            c.execute("INSERT INTO mix_b VALUES (%s, %s, now(), %s)",
                      (bid, json.dumps({"k": k, "t": t, "f": 1.25, "l": [t, None, "x"]}),
                       text_of(rnd.randint(0, 50), t)))
            if b_ids and rnd.random() < 0.5:
                c.execute("UPDATE mix_b SET data = data || '{\"u\": true}' WHERE id = %s",
                          (rnd.choice(b_ids),))
            if rnd.random() < 0.3:
                c.execute("SELECT pg_notify('it_two', %s)",
                          (rnd.choice(["not json", f'{{"raw": {t}, "k": {k}}}', "[1, 2.0]",
                                       f"plain {k}.{t}"]),))
            if rnd.random() < 0.1:
                c.rollback()
                nxt = new[0]     # ids of the rolled-back inserts are free again
                continue
            c.commit()
            a_ids = [i for i in a_ids if i not in set(dele)] + new
            b_ids.append(bid)


def step_two(ctx, admin):
    db = ctx.db
    db.execute(MIX_TABLES)
    with db.transaction():       # both routes reach the worker in one reload
        r_a = db.execute("SELECT notifier.add_queue('it_two')").fetchone()[0]
        r_b = db.execute("SELECT notifier.add_queue('it_two', 'custom_q')").fetchone()[0]
    ctx.wait_channels(present=("it_two",))
    rl = db.execute("SELECT id, target FROM notifier.route_list WHERE channel = 'it_two' "
                    "ORDER BY id").fetchall()
    ctx.check(rl == [(r_a, "notifier.queue"), (r_b, "custom_q")], f"route_list for it_two: {rl}")

    lis = Listener(DB, ["it_two"])
    heard = []
    lt = Threads("LISTEN client")
    lt.start(lambda: heard.extend(lis.until(lambda c, p: p == "END-two", 120, "END-two")))
    try:
        t0 = time.monotonic()
        prod = Threads("mixed workload")
        for k in range(3):
            prod.start(mixed_producer, k, 60)
        prod.join(120)
        db.execute("NOTIFY it_two, 'not json'")
        db.execute("NOTIFY it_two, 'END-two'")
        lt.join(120)
        heard = [n[1] for n in heard if n[0] == "it_two"]
        log(f"mixed workload: 3 connections, {len(heard)} events heard by the LISTEN client "
            f"in {time.monotonic() - t0:.2f} s")
        ctx.check(len(heard) > 2000, f"the workload sent only {len(heard)} events")
        wait_queued(db, "it_two", "END-two", 60)
        wait_queued(db, "it_two", "END-two", 60, table="public.custom_q")
        rows_a = queue_rows(db, "it_two")
        rows_b = queue_rows(db, "it_two", table="public.custom_q", key="qid")
        ok_a = compare_stream(ctx, "notifier.queue vs LISTEN", heard, rows_a)
        ok_b = compare_stream(ctx, "custom_q (payload json) vs LISTEN", heard, rows_b)
        if ok_a and ok_b:
            log(f"both routes of it_two hold the {len(heard)} events the LISTEN client got, "
                f"same payloads, same order")
        extra = db.execute("SELECT count(*), count(*) FILTER (WHERE extra = 7 AND note IS NULL "
                           "AND tag IS NULL AND received_at IS NOT NULL) FROM custom_q").fetchone()
        ctx.check(extra[0] == extra[1], f"custom_q: {extra[0] - extra[1]} rows without the "
                                        f"defaults in extra/note/tag/received_at")
        n_nj = heard.count("not json")
        q_nj = db.execute("SELECT count(*) FROM notifier.queue WHERE channel = 'it_two' "
                          "AND payload = to_jsonb('not json'::text)").fetchone()[0]
        ctx.check(n_nj > 0 and q_nj == n_nj,
                  f"NOTIFY 'not json': heard {n_nj}, stored as the JSON string \"not json\" {q_nj}")
        log(f"NOTIFY it_two, 'not json' ({n_nj}x) stored as the JSON string \"not json\"")
        evs = [canon(parse(t)) for _, t in rows_a]
        ids = [e["id"] for e in evs if isinstance(e, dict) and "xid" in e]
        ctx.check(len(ids) == len(set(ids)), "duplicate event ids in notifier.queue")
        ctx.expected[r_a] = ["it_two", "notifier.queue", len(heard)]
        ctx.expected[r_b] = ["it_two", "custom_q", len(heard)]
    finally:
        lis.close()


def step_oversize(ctx, admin):
    db = ctx.db
    db.execute("CREATE TABLE bigt (id int PRIMARY KEY, body text)")
    db.execute("SELECT notifier.watch('bigt', channel => 'it_big', delivery => 'notify')")
    r = db.execute("SELECT notifier.add_queue('it_big')").fetchone()[0]
    ctx.wait_channels(present=("it_big",))
    lis = Listener(DB, ["it_big"])
    body = text_of(5000, 7)
    try:
        with connect(DB) as p:
            p.execute("SET pg_notifier.max_payload_bytes = 1024")
            p.execute("INSERT INTO bigt VALUES (1, 'small')")
            p.execute("INSERT INTO bigt VALUES (2, %s)", (body,))
            p.execute("UPDATE bigt SET body = body || 'x' WHERE id = 2")
            p.execute("NOTIFY it_big, 'END-big'")
        heard = [n[1] for n in lis.until(lambda c, p: p == "END-big", 20, "END-big")]
        ctx.check(len(heard) == 4, f"LISTEN client heard {len(heard)} events on it_big, expected 4")
        wait_queued(db, "it_big", "END-big", 10)
        rows = queue_rows(db, "it_big")
        ctx.check(len(rows) == len(heard), f"{len(rows)} rows in the queue for {len(heard)} events")
        refs = 0
        for i, (p, (rid, text)) in enumerate(zip(heard, rows)):
            got = canon(parse(text))
            env = as_event(p)
            if i in (1, 2):
                if not ctx.check(isinstance(env, dict) and isinstance(env.get("ref"), Decimal)
                                 and env.get("truncated") is True and len(p.encode()) < 1024,
                                 f"event #{i + 1} was not sent as a reference: {short(p)}"):
                    continue
                refs += 1
                full = db.execute("SELECT notifier.payload(%s)::text", (int(env["ref"]),)).fetchone()[0]
                ctx.check(got == canon(parse(full)),
                          f"event #{i + 1}: queued {short(text)}, notifier.payload({env['ref']}) "
                          f"is {short(full)}")
                ctx.check("ref" not in got and "truncated" not in got,
                          f"event #{i + 1}: the queue holds the envelope: {short(text)}")
                want_body = body if i == 1 else body + "x"
                ctx.check((got.get("row") or {}).get("body") == want_body,
                          f"event #{i + 1}: row.body in the queue is not the {len(want_body)}-char body")
            else:
                ctx.check(got == env, f"event #{i + 1}: queued {short(text)}, heard {short(p)}")
        log(f"{refs} oversize events: LISTEN client got {{\"ref\":N,\"truncated\":true}} "
            f"({max(len(p) for p in heard[1:3])} bytes), the queue the full event "
            f"(= notifier.payload(N), {max(len(t) for _, t in rows)} chars)")
        ctx.expected[r] = ["it_big", "notifier.queue", len(heard)]
    finally:
        lis.close()


def step_pop(ctx, admin):
    db = ctx.db
    db.execute("CREATE TABLE pop_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('pop_t', channel => 'it_pop', payload => 'keys', delivery => 'notify')")
    r = db.execute("SELECT notifier.add_queue('it_pop')").fetchone()[0]
    ctx.wait_channels(present=("it_pop",))

    got = [[] for _ in range(POP_CONSUMERS)]     # per consumer: (queue id, channel, payload)
    lock = threading.Lock()
    total = [0]
    stop = threading.Event()
    problems = []

    def consumer(k):
        with connect(DB) as c:
            empty = 0
            while True:
                rows = c.execute("SELECT id, channel, payload::text FROM notifier.pop('it_pop', 50)").fetchall()
                if rows:
                    empty = 0
                    if len(rows) > 50:
                        problems.append(f"pop(…, 50) returned {len(rows)} rows")
                    if [x[0] for x in rows] != sorted(x[0] for x in rows):
                        problems.append("pop() rows not in id order")
                    got[k].extend(rows)
                    with lock:
                        total[0] += len(rows)
                    continue
                empty += 1
                if stop.is_set() and empty > 1:
                    return
                time.sleep(0.005)

    def producer(k, n, per_txn):
        with connect(DB, autocommit=False) as c:
            lo = k * n + 1
            for start in range(lo, lo + n, per_txn):
                c.execute("INSERT INTO pop_t SELECT generate_series(%s::int, %s::int)",
                          (start, min(start + per_txn, lo + n) - 1))
                c.commit()

    cons = Threads("pop consumer")
    prod = Threads("pop producer")
    t0 = time.monotonic()
    for k in range(POP_CONSUMERS):
        cons.start(consumer, k)
    for k in range(2):
        prod.start(producer, k, POP_EVENTS // 2, 250)
    prod.join(60)
    t_prod = time.monotonic() - t0
    try:
        wait_for(f"{POP_EVENTS} events popped", lambda: (total[0] >= POP_EVENTS, total[0]), 60)
    finally:
        stop.set()
        cons.join(30)
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    late = db.execute("SELECT count(*) FROM notifier.pop('it_pop', 1000)").fetchone()[0]
    ctx.check(late == 0, f"{late} events still arrived after all {POP_EVENTS} had been popped")
    for p in sorted(set(problems)):
        ctx.check(False, p)

    allrows = [x for g in got for x in g]
    qids = [x[0] for x in allrows]
    evs = [json.loads(x[2]) for x in allrows]
    eids = [e.get("id") for e in evs]
    keys = sorted(e.get("key", {}).get("id") for e in evs)
    ctx.check(len(allrows) == POP_EVENTS, f"popped {len(allrows)} events, expected {POP_EVENTS}")
    ctx.check(len(set(qids)) == len(qids), f"{len(qids) - len(set(qids))} queue ids popped twice")
    ctx.check(len(set(eids)) == len(eids), f"{len(eids) - len(set(eids))} event ids popped twice")
    ctx.check(keys == list(range(1, POP_EVENTS + 1)), "the popped events are not exactly the "
                                                      f"rows 1..{POP_EVENTS}")
    ctx.check(all(x[1] == "it_pop" for x in allrows), "pop('it_pop') returned other channels")
    left = queue_count(db, "it_pop")
    ctx.check(left == 0, f"{left} events of it_pop left in notifier.queue")
    log(f"{POP_CONSUMERS} consumers popped {len(allrows)} events "
        f"({', '.join(str(len(g)) for g in got)}) while 2 connections produced them "
        f"(production {t_prod:.2f} s, all popped after {elapsed:.2f} s): each exactly once")
    ctx.expected[r] = ["it_pop", "notifier.queue", POP_EVENTS]


def step_burst(ctx, admin):
    db = ctx.db
    db.execute("CREATE TABLE burst_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('burst_t', channel => 'it_burst', payload => 'keys', delivery => 'notify')")
    r = db.execute("SELECT notifier.add_queue('it_burst')").fetchone()[0]
    ctx.wait_channels(present=("it_burst",))

    samples = []
    stop = threading.Event()

    def sampler():
        with connect(DB) as c:
            while not stop.is_set():
                samples.append(c.execute("SELECT pg_notification_queue_usage()").fetchone()[0])
                stop.wait(0.2)

    per_conn = BURST // BURST_CONNS

    def producer(k):
        with connect(DB, autocommit=False) as c:
            lo = k * per_conn + 1
            for start in range(lo, lo + per_conn, BURST_TXN):
                c.execute("INSERT INTO burst_t SELECT generate_series(%s::int, %s::int)",
                          (start, min(start + BURST_TXN, lo + per_conn) - 1))
                c.commit()

    smp = Threads("usage sampler")
    smp.start(sampler)
    prod = Threads("burst producer")
    t0 = time.monotonic()
    for k in range(BURST_CONNS):
        prod.start(producer, k)
    try:
        prod.join(180)
        t_prod = time.monotonic() - t0
        log(f"{BURST} events committed by {BURST_CONNS} connections in {t_prod:.1f} s "
            f"({BURST / t_prod:,.0f} events/s)")
        seen = [0]

        def arrived():
            n = queue_count(db, "it_burst")
            if n > BURST:
                raise TestFailure(f"{n} rows in the queue for {BURST} events")
            seen[0] = n
            return n == BURST, n
        wait_for(f"{BURST} events in notifier.queue", arrived, 180, interval=1.0)
        t_done = time.monotonic() - t0
    finally:
        stop.set()
        smp.join(10)
    mx = max(samples) if samples else None
    final = db.execute("SELECT pg_notification_queue_usage()").fetchone()[0]
    sample = db.execute("SELECT payload::text FROM notifier.queue WHERE channel = 'it_burst' "
                        "LIMIT 1").fetchone()[0]
    compact = len(json.dumps(json.loads(sample), separators=(",", ":")).encode())
    entry = (16 + len("it_burst") + 1 + compact + 1 + 3) // 4 * 4
    undrained = BURST * entry / QUEUE_BYTES
    ctx.timing(f"burst: {BURST} events in the queue after", f"{t_done:.1f} s "
               f"({BURST / t_done:,.0f} events/s commit-to-queue, producers alone "
               f"{BURST / t_prod:,.0f} events/s)")
    ctx.timing("burst: max pg_notification_queue_usage()",
               f"{mx:.6f} over {len(samples)} samples (final {final:.6f}; the burst would fill "
               f"~{undrained:.6f} if nothing drained it: the peak held "
               f"~{100 * mx / undrained:.0f}% of the burst)")
    ctx.check(mx is not None and len(samples) >= 5, f"only {len(samples)} usage samples")
    ctx.check(mx is not None and mx < MAX_USAGE, f"max queue usage {mx} >= {MAX_USAGE}")
    n, d_ev, d_key, lo, hi = db.execute(
        "SELECT count(*), count(DISTINCT payload->>'id'), count(DISTINCT payload->'key'->>'id'), "
        "min((payload->'key'->>'id')::int), max((payload->'key'->>'id')::int) "
        "FROM notifier.queue WHERE channel = 'it_burst'").fetchone()
    ctx.check(n == BURST and d_ev == BURST and d_key == BURST and (lo, hi) == (1, BURST),
              f"burst in the queue: {n} rows, {d_ev} distinct event ids, {d_key} distinct keys "
              f"({lo}..{hi}), expected {BURST} each (1..{BURST})")
    log(f"notifier.queue: {n} rows, {d_ev} distinct event ids, keys {lo}..{hi}")
    ctx.expected[r] = ["it_burst", "notifier.queue", BURST]
    db.execute("TRUNCATE notifier.queue")


def step_stats(ctx, admin):
    cur = ctx.db.cursor(row_factory=dict_row)
    rows = {r["route_id"]: r for r in cur.execute("SELECT * FROM notifier.stats").fetchall()}
    s = ctx.status()
    for rid, (ch, target, n) in sorted(ctx.expected.items()):
        st = rows.pop(rid, None)
        if not ctx.check(st is not None, f"route {rid} ({ch}) missing from notifier.stats"):
            continue
        log(f"stats route {rid} {ch:12} -> {st['target']:15} received {st['received']:>8} "
            f"written {st['written']:>8} errors {st['errors']} last_event_at {st['last_event_at']}")
        ctx.check((st["channel"], st["kind"], st["target"]) == (ch, "queue", target),
                  f"route {rid}: channel/kind/target {st['channel']}/{st['kind']}/{st['target']}")
        if n is not None:
            ctx.check(st["received"] == n and st["written"] == n,
                      f"route {rid} ({ch} -> {target}): received {st['received']}, "
                      f"written {st['written']}, expected {n} each")
        ctx.check(st["errors"] == 0 and st["last_error"] is None,
                  f"route {rid}: errors {st['errors']}, last_error {st['last_error']!r}")
        ctx.check(n == 0 or st["last_event_at"] is not None, f"route {rid}: last_event_at is NULL")
        ctx.check(st["worker_pid"] == ctx.worker_pid and st["worker_state"] in RUNNING,
                  f"route {rid}: worker_pid {st['worker_pid']}, worker_state {st['worker_state']!r}")
        ctx.check(st["queue_usage"] is not None and 0 <= st["queue_usage"] <= 1,
                  f"route {rid}: queue_usage {st['queue_usage']}")
    ctx.check(not rows, f"notifier.stats lists routes that do not exist any more: {sorted(rows)}")
    ctx.check(s["pid"] == ctx.worker_pid,
              f"the worker restarted during the test: pid {ctx.worker_pid} -> {s['pid']}")
    ctx.check(s["queue_usage"] is not None and 0 <= s["queue_usage"] <= 1,
              f"status().queue_usage = {s['queue_usage']}")
    log(f"status(): pid {s['pid']} (same since the start), state {s['state']!r}, "
        f"channels {s['channels']}, last_error {s['last_error']!r}")


STEPS = [
    Step("start", "worker starts, in status() and pg_stat_activity", step_start, needed=True),
    Step("ext", "DROP / CREATE EXTENSION while the worker runs", step_ext, needed=True),
    Step("bad", "bad inputs", step_bad),
    Step("live", "routes added and removed live; raw payloads", step_live),
    Step("two", "two routes on one channel = what a LISTEN client saw", step_two),
    Step("oversize", "oversize references resolved", step_oversize),
    Step("pop", f"notifier.pop with {POP_CONSUMERS} concurrent consumers", step_pop),
    Step("burst", f"{BURST}-event burst", step_burst),
    Step("stats", "notifier.stats", step_stats),
]


def cleanup(ctx):
    return drop_databases(ctx.saved, [DB, DB_B], [ROLE])


def setup(ctx):
    admin = ctx.connect("postgres")
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(ROLE)))
    for d in (DB, DB_B):
        new_database(admin, d)
    with connect(DB_B) as b:
        b.execute("CREATE EXTENSION pg_notifier")
    ctx.obs = ctx.connect(DB_B)
    ctx.db = ctx.connect(DB)
    # a worker that blocks DROP EXTENSION or DDL must show as an error, not a hang
    ctx.db.execute("SET lock_timeout = '20s'")
    log(f"databases {DB} (no extension yet) and {DB_B} (with the extension) created")
    return (admin,)


if __name__ == "__main__":
    main(NAME, STEPS, Ctx(), setup=setup, cleanup=cleanup, timeout=TIMEOUT)
