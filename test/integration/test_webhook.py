#!/usr/bin/python3
"""Integration test of pg_notifier's webhook sink against a real HTTP receiver.

Runs against a cluster started with shared_preload_libraries = pg_notifier
(test/run does that).  It creates a database of its own, adds it to
pg_notifier.databases and sets pg_notifier.retry_base_ms = 50 and
pg_notifier.retry_max_ms = 500 (ALTER SYSTEM + pg_reload_conf(), so retries
are fast).  It starts an HTTP/1.1 keep-alive receiver (ThreadingHTTPServer) on
127.0.0.1.  The receiver answers per path as each step scripts it, and records
every request: path, headers, body, time, connection, requests in flight.

  [start]    the worker of the test database listens;
  [bad]      about 75 bad arguments to add_webhook raise (messages printed,
             SQLSTATE 22004 for NULLs, 22023 for bad values), including
             pg_notifier.allowed_hosts; the limits themselves are accepted;
  [role]     a non-superuser cannot add_webhook / remove_route / redeliver /
             redeliver_dead, nor read notifier.routes or notifier.deliveries.
             With pg_monitor it sees route_list with the secret masked, as a
             superuser does ('********').  With an explicit GRANT EXECUTE it
             can add and remove a webhook route;
  [mixed]    a mixed workload (insert/update/delete, raw NOTIFYs, an oversize
             event), about 300 events, goes to two routes on one channel.
             Route A: concurrency 4, custom headers, a plain secret.  Route B:
             ordered, a whsec_ secret.  The bodies equal the events a LISTEN
             client saw (the same multiset; the same order for B).  Checked:
             Content-Type, User-Agent, the custom headers, webhook-id (the
             event id, or delivery-<id>), webhook-timestamp, and the signature
             (Python's hmac).  Also checked: at most `concurrency` requests in
             flight, connections reused, and every deliveries row delivered
             at attempt 1;
  [batch]    batch_size 10: array bodies of 1..10 events, every event once,
             in order within a batch, webhook-id = the first event's id,
             signed;
  [batch-retry] a batch is one message: batch_size 5, a receiver that
             answers 503 twice to every webhook-id while events keep coming;
             every webhook-id carries the same events at its 3 attempts, no
             event under two ids, all delivered (an ordered route: in commit
             order too);
  [ordered]  ordered routes under failures.  The receiver fails the first 3
             requests with 500: the accepted ids are exactly the commit order,
             never 2 requests in flight.  A second ordered route with
             max_attempts 2: its head goes dead, then the rest follow in order;
  [ordered-key] ordered => 'key' (batch_size 1 and 3) with a receiver that
             fails a third of the requests at random and delays them: per
             key, first 2xx in commit order, each event sent only after the
             previous one's 2xx; more than one request in flight;
  [codes]    one event to 13 routes.  500,500,200 / 503 / 408 / 425 / 302
             (redirect not followed) then 200: delivered once, attempts =
             requests, last_http_status 200.  201, 204: delivered.  404, 400,
             401, 410, 422: dead at once (attempts 1; the 410 also
             disables its route: test_webhook_disable.py).  Always 500 with
             max_attempts 4: dead after 4 attempts, backoff gaps within
             retry_max_ms, next_attempt_at sampled while pending;
  [retry-after] 429 + Retry-After: 3 with retry_max_ms 500: the retry comes
             after ~0.5 s (capped), and meanwhile the worker idles (its CPU
             time, from /proc when the server runs on this machine).  With
             retry_max_ms 5000: 429 + Retry-After: 1 -> retry >= 1 s later;
             503 + Retry-After as an HTTP date -> not before that date;
  [timeout]  a receiver that hangs, timeout_ms 300, max_attempts 2: two
             requests >= 0.3 s apart, last_error names the timeout, then dead.
             A route with timeout_ms 2000 and max_attempts 1 is dead after
             ~2 s.  While its request hangs, another route's event is
             delivered at once (the worker does not block on a request);
  [refused]  a closed port, max_attempts 3: 3 attempts, last_error names the
             connection, dead;
  [down]     a second receiver is stopped, 200 events are produced, and after
             ~2.5 s it starts again on the same port: every event is delivered
             exactly once, none lost;
  [redeliver] redeliver(id) of dead rows (404, 500) and redeliver_dead(route)
             (404 x5, the hanging route) after the receiver is fixed: all are
             delivered at attempt 1; redeliver_dead again returns 0.  Bad
             calls to both functions raise.  remove_route deletes the route's
             deliveries;
  [ssrf]     pg_notifier.denied_networks, checked on the address connected
             to.  By default: 0.0.0.0 and [::ffff:0.0.0.0] (which connect to
             this machine, where the receiver listens on the port) dead at
             attempt 1 with "address denied" (also in notifier.stats), the
             loopback receiver gets its event.  With 127.0.0.2/32,
             127.0.0.1/32 and ::1/128 added, a receiver on 127.0.0.2 is never
             hit through any spelling (plain, decimal, hex, 127.2,
             IPv4-mapped IPv6), nor localhost (a name, through /etc/hosts).
             No URL leaves this machine even if the guard is broken.  Bad
             CIDRs are refused, and so is SET by a non-superuser;
  [rotate]   set_secret(route, new, '3 seconds'): the request before it is
             signed with the old secret; one during the overlap carries
             'v1,<new> v1,<old>' (each verified); one after it the new one
             only; keep_previous 0 drops the old one at once.  route_list
             shows no previous secret.  Bad calls (NULLs, unknown route,
             negative interval, bad secrets, a queue route, a non-superuser)
             raise and change nothing;
  [pause]    an ordered route gets 5 events, is paused, 10 more come: a
             witness route on the same channel gets all 15 while the paused
             one keeps 10 pending and sends none (stats state 'paused',
             pending 10); resumed, it sends the 10, every event once, in
             order (state 'active').  Bad calls (NULL, unknown id, a queue
             route, a non-superuser) raise;
  [rate]     max_per_second 40: 200 events reach the receiver at 40 requests
             per second within 10 % (first to last request, receiver's clock),
             and no second holds more than 10 % over it plus the bucket's
             tenth of a second;
  [blackhole] a route to a loopback port that accepts connections and never
             answers (timeout_ms 120000, concurrency 8) and a healthy route on
             the same channel: the healthy one delivers all 500 events while
             the other has 8 requests in flight and the rest pending;
  [stats]    notifier.stats per route: received, delivered, retried, dead,
             pending, in_flight, last_http_status, latency_p50/p99_ms agree
             with what happened; the worker never restarted; no request went
             to a path no route uses.

On exit (also on failure or watchdog) the ALTER SYSTEM settings are put back
as they were, the database and the role are dropped and the receivers stopped.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER...).  Run it with
Debian's python3 (psycopg 3.1).  Environment: PG_NOTIFIER_TEST_TIMEOUT
(watchdog, seconds, default 240), PG_NOTIFIER_WEBHOOK_TEST_DB (database name).
"""

import base64
import collections
import email.utils
import hmac
import json
import os
import random
import re
import socket
import sys
import threading
import time
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Checks, Listener, Step, TestFailure, as_event, canon, connect,  # noqa: E402
                   describe_error, drop_databases, expect_error, free_port, ident, log, main,
                   new_database, parse, settings_to_restore, short, text_of, wait_for)
from recorder import Receiver, always, expected_signature, fail_first, hang, ok  # noqa: E402

NAME = "test_webhook"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
DB = os.environ.get("PG_NOTIFIER_WEBHOOK_TEST_DB", "pg_notifier_it_webhook")
ROLE = "notifier_it_webhook_user"        # role names beginning pg_ are reserved
RUNNING = ("listening", "forwarding")
RETRY_BASE_MS = 50
RETRY_MAX_MS = 500
# the settings this test changes with ALTER SYSTEM (and puts back)
GUCS = ("pg_notifier.databases", "pg_notifier.retry_base_ms", "pg_notifier.retry_max_ms",
        "pg_notifier.allowed_hosts", "pg_notifier.denied_networks")
SLACK = 0.4         # seconds of scheduling slack on upper time bounds (2 shared cores)
SIG_ARGS = ("channel", "url", "headers", "secret", "batch_size", "max_attempts",
            "timeout_ms", "concurrency", "ordered", "max_per_second")
CASTS = {"channel": "text", "url": "text", "headers": "jsonb", "secret": "text",
         "batch_size": "integer", "max_attempts": "integer", "timeout_ms": "integer",
         "concurrency": "integer", "ordered": "notifier.ordering",
         "max_per_second": "double precision", "disable_after": "interval"}


# ---------------------------------------------------------------- JSON helpers

def key(ev):
    """A hashable, order-insensitive-for-objects form of a canonical event."""
    return json.dumps(ev, sort_keys=True, default=str)


def event_id(ev):
    return str(ev["id"]) if isinstance(ev, dict) and "id" in ev else None


# ---------------------------------------------------------- request checks

def request_problems(r, route):
    """What is wrong with the headers of request r of a webhook route (a dict of
    add_webhook arguments)."""
    p = []
    if r.method != "POST":
        p.append(f"method {r.method}")
    ct = r.header("content-type")
    if not ct or ct.split(";")[0].strip().lower() != "application/json":
        p.append(f"Content-Type {ct!r}")
    ua = r.header("user-agent")
    if not ua or not re.fullmatch(r"pg_notifier/\d+(\.\d+)*\S*", ua):
        p.append(f"User-Agent {ua!r}")
    for name in ("content-type", "user-agent", "webhook-id", "webhook-timestamp"):
        if len(r.hmap.get(name, [])) != 1:
            p.append(f"header {name} {len(r.hmap.get(name, []))} times")
    for name, value in (route.get("headers") or {}).items():
        got = r.hmap.get(name.lower())
        if got != [value]:
            p.append(f"custom header {name}: {got!r}, expected [{value!r}]")
    ts = r.header("webhook-timestamp")
    if ts is None or not ts.isdigit():
        p.append(f"webhook-timestamp {ts!r}")
    elif abs(int(ts) - r.wall) > 5:
        p.append(f"webhook-timestamp {ts} is {int(ts) - r.wall:+.1f} s from the receiver's clock")
    sig = r.header("webhook-signature")
    secret = route.get("secret")
    if secret is None:
        if sig is not None:
            p.append(f"webhook-signature {sig!r} on a route without a secret")
    elif sig is None:
        p.append("no webhook-signature")
    elif r.wid is not None and ts is not None:
        want = expected_signature(secret, r.wid, ts, r.body)
        if not any(hmac.compare_digest(s, want) for s in sig.split()):
            p.append(f"webhook-signature {sig!r} does not verify (expected {want!r})")
    return p


# ------------------------------------------------------------ database helpers

def webhook_call(args):
    """SELECT notifier.add_webhook(name => %s::type, ...) for the arguments in args."""
    parts = [sql.SQL("{} => %s::{}").format(ident(k), sql.SQL(CASTS[k])) for k in args]
    q = sql.SQL("SELECT notifier.add_webhook({})").format(sql.SQL(", ").join(parts))
    vals = [json.dumps(v) if k == "headers" and isinstance(v, dict) else v
            for k, v in args.items()]
    return q, vals


def add_webhook(conn, **args):
    q, vals = webhook_call(args)
    return conn.execute(q, vals).fetchone()[0]


def route_rows(conn, rid):
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        "SELECT id, event_id, payload::text AS payload, status, attempts, next_attempt_at, "
        "last_http_status, last_error, received_at, updated_at, delivered_at "
        "FROM notifier.deliveries WHERE route_id = %s ORDER BY id", (rid,)).fetchall()


def status_counts(conn, rid):
    return dict(conn.execute("SELECT status, count(*) FROM notifier.deliveries "
                             "WHERE route_id = %s GROUP BY 1", (rid,)).fetchall())


def expected_events(conn, heard):
    """The events a webhook must get for the NOTIFY payloads heard: oversize
    references resolved into the full stored event."""
    out = []
    for p in heard:
        ev = as_event(p)
        if isinstance(ev, dict) and ev.get("truncated") is True and "ref" in ev:
            full = conn.execute("SELECT notifier.payload(%s)::text", (int(ev["ref"]),)).fetchone()[0]
            ev = canon(parse(full))
        out.append(ev)
    return out


class Ctx(Checks):
    def __init__(self):
        super().__init__()
        self.worker_pid = None
        self.db = None                 # superuser connection to DB
        self.rcv = None                # the main receiver
        self.saved = None              # GUC -> value in postgresql.auto.conf (None: not set)
        self.expect = {}               # route id -> expectations for [stats]
        self.known_paths = set()
        self.rid = {}                  # path -> route id

    def check_list(self, what, problems, limit=4):
        """One failure for a list of problems (the first few are shown)."""
        if problems:
            more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
            self.check(False, f"{what}: {len(problems)} problem(s): "
                              + "; ".join(problems[:limit]) + more)
        return not problems

    def status(self):
        cur = self.db.cursor(row_factory=dict_row)
        rows = cur.execute("SELECT * FROM notifier.status() WHERE database = %s", (DB,)).fetchall()
        return rows[0] if rows else None

    def wait_channels(self, present, timeout=10):
        def probe():
            s = self.status()
            chans = (s or {}).get("channels") or []
            return all(c in chans for c in present), s
        return wait_for(f"status().channels with {list(present)}", probe, timeout, interval=0.01)

    def add_routes(self, routes, channels=None):
        """Add webhook routes (path -> add_webhook arguments) in one transaction,
        wait until the worker listens to their channels; returns path -> id."""
        ids = {}
        with self.db.transaction():
            for path, args in routes.items():
                ids[path] = add_webhook(self.db, **args)
        self.wait_channels(sorted({a["channel"] for a in routes.values()}))
        for path, rid in ids.items():
            self.rid[path] = rid
            self.known_paths.add(path)
        return ids

    def wait_final(self, rid, n, timeout, what):
        """Until route rid has n rows in notifier.deliveries, none pending or in flight."""
        def probe():
            s = status_counts(self.db, rid)
            done = (sum(s.values()) >= n and s.get("pending", 0) == 0
                    and s.get("in_flight", 0) == 0)
            return done, s
        s, secs = wait_for(f"{what}: {n} deliveries of route {rid} delivered or dead",
                           probe, timeout, interval=0.02)
        total = sum(s.values())
        self.check(total == n, f"{what}: {total} rows in notifier.deliveries for route {rid}, "
                               f"expected {n}")
        return s, secs

    def set_gucs(self, admin, settings):
        """ALTER SYSTEM SET name = value for each; reload; wait until this
        session sees them (the worker gets the same SIGHUP)."""
        for name, value in settings.items():
            if value is None:
                admin.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name)))
            else:
                admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    sql.SQL(name), sql.Literal(str(value))))
        admin.execute("SELECT pg_reload_conf()")

        def seen():
            now = {n: admin.execute("SELECT setting, sourcefile FROM pg_settings WHERE name = %s",
                                    (n,)).fetchone() for n in settings}
            return all((now[n][1] or "").endswith("postgresql.auto.conf") and now[n][0] == str(v)
                       if v is not None else not (now[n][1] or "").endswith("postgresql.auto.conf")
                       for n, v in settings.items()), now
        wait_for(f"settings {settings} in effect", seen, 10, interval=0.05)
        time.sleep(0.3)    # the worker takes its SIGHUP at its next latch wake-up


def watched_table(db, table, channel, cols="id int PRIMARY KEY, v text"):
    db.execute(sql.SQL("CREATE TABLE {} ({})").format(ident(table), sql.SQL(cols)))
    # notify mode: the test also routes hand-written NOTIFYs of the channel,
    # which 'auto' (test_durability) never takes as events
    db.execute("SELECT notifier.watch(%s, channel => %s, delivery => 'notify')", (table, channel))


def worker_cpu_seconds(pid):
    """CPU time (user + system) of the worker, when it runs on this machine;
    None otherwise."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"pg_notifier worker" not in f.read():
                return None
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def gaps(reqs):
    return [b.t0 - a.t0 for a, b in zip(reqs, reqs[1:])]


# ----------------------------------------------------------------------- steps

def step_start(ctx, admin):
    spl = admin.execute("SHOW shared_preload_libraries").fetchone()[0]
    if "pg_notifier" not in spl:
        raise TestFailure(f"shared_preload_libraries = {spl!r}: the cluster must preload pg_notifier")
    have = ctx.db.execute("SELECT to_regprocedure('notifier.add_webhook(text, text, jsonb, text, "
                          "integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)')").fetchone()[0]
    if have is None:
        raise TestFailure("the installed pg_notifier has no notifier.add_webhook(...)")
    dbs = [d.strip() for d in admin.execute("SHOW pg_notifier.databases").fetchone()[0].split(",")
           if d.strip() and d.strip() != DB]
    t0 = time.monotonic()
    ctx.set_gucs(admin, {"pg_notifier.databases": ", ".join(dbs + [DB]),
                         "pg_notifier.retry_base_ms": RETRY_BASE_MS,
                         "pg_notifier.retry_max_ms": RETRY_MAX_MS})
    log(f"pg_notifier.databases = {', '.join(dbs + [DB])!r}, retry_base_ms = {RETRY_BASE_MS}, "
        f"retry_max_ms = {RETRY_MAX_MS}; configuration reloaded")
    s, _ = wait_for(f"worker of {DB} listening",
                    lambda: (lambda s: (s is not None and s["pid"] is not None
                                        and s["state"] in RUNNING, s))(ctx.status()), 30, 0.05)
    ctx.worker_pid = s["pid"]
    ctx.timing("worker of the new database listening after", f"{time.monotonic() - t0:.2f} s")


def step_bad(ctx, admin):
    db = ctx.db
    n_routes = db.execute("SELECT count(*) FROM notifier.routes").fetchone()[0]
    base = {"channel": "wh_bad", "url": "http://127.0.0.1:9/bad"}
    cases = 0

    def E(what, args, need, codes):
        nonlocal cases
        cases += 1
        full = dict(base)
        full.update(args)
        q, vals = webhook_call(full)
        expect_error(ctx, db, what, q, vals, need=need, codes=codes)

    # NULL anything (secret NULL is the default: no secret)
    for arg, words in (("channel", ["channel"]), ("url", ["url"]),
                       ("headers", ["header"]), ("batch_size", ["batch_size", "batch"]),
                       ("max_attempts", ["max_attempts", "attempts"]),
                       ("timeout_ms", ["timeout"]), ("concurrency", ["concurrency"]),
                       ("ordered", ["ordered"])):
        E(f"{arg} => NULL", {arg: None}, [words], ("22004",))
    # channel
    E("channel ''", {"channel": ""}, [["channel"]], ("22023",))
    E("channel of 64 ASCII bytes", {"channel": "c" * 64},
      [["channel"], ["63", "64", "long", "byte"]], ("22023",))
    E("channel of 32 x 'é' (64 bytes)", {"channel": "é" * 32},
      [["channel"], ["63", "64", "long", "byte"]], ("22023",))
    # url
    bad_urls = [
        ("not a url", "not a url"), ("empty", ""), ("ftp: scheme", "ftp://127.0.0.1/x"),
        ("file: scheme", "file:///etc/passwd"), ("gopher: scheme", "gopher://127.0.0.1/"),
        ("ldap: scheme", "ldap://127.0.0.1/dc=x"), ("javascript: scheme", "javascript:alert(1)"),
        ("no scheme (host/path)", "example.com/hook"), ("no scheme (host:port)", "127.0.0.1:8080/x"),
        ("no host: http://", "http://"), ("no host: http:///path", "http:///path"),
        ("no host, port only", "https://:443/x"), ("space in host", "http://exa mple.com/"),
        ("space in path", "http://example.com/a b"), ("leading space", " http://example.com/"),
        ("CR LF in path", "http://example.com/x\r\nX-Injected: 1"),
        ("tab in path", "http://example.com/\tx"), ("DEL in path", "http://example.com/\x7f"),
        ("control char in host", "http://exam\x01ple.com/"), ("port 99999", "http://example.com:99999/"),
        ("port not a number", "http://example.com:abc/"), ("unclosed IPv6 bracket", "http://[::1/x"),
    ]
    for what, u in bad_urls:
        E(f"url: {what}", {"url": u}, [["url"]], ("22023",))

    # pg_notifier.allowed_hosts
    ctx.set_gucs(admin, {"pg_notifier.allowed_hosts": "allowed.example, 127.0.0.1"})
    try:
        # this session must see the new value before add_webhook
        wait_for("allowed_hosts visible to the test session",
                 lambda: (lambda v: (v == "allowed.example, 127.0.0.1", v))(
                     db.execute("SHOW pg_notifier.allowed_hosts").fetchone()[0]), 10)
        for what, u in (("host not allowed", "http://evil.example/x"),
                        ("allowed name as a prefix", "http://allowed.example.evil.com/x"),
                        ("subdomain of an allowed name", "http://sub.allowed.example/x"),
                        ("localhost (only 127.0.0.1 allowed)", "http://localhost/x")):
            E(f"allowed_hosts: {what}", {"url": u}, [["host"]], ("22023",))
        for u in ("http://ALLOWED.Example/x", "https://user:pw@allowed.example:8443/x",
                  "http://127.0.0.1:1/x"):
            try:
                rid = add_webhook(db, channel="wh_bad", url=u)
                db.execute("SELECT notifier.remove_route(%s)", (rid,))
                log(f"allowed_hosts: {u!r} accepted")
            except psycopg.Error as ex:
                ctx.check(False, f"allowed_hosts = 'allowed.example, 127.0.0.1': {u!r} refused: "
                                 f"{describe_error(ex)}")
    finally:
        ctx.set_gucs(admin, {"pg_notifier.allowed_hosts": ctx.saved.get("pg_notifier.allowed_hosts")})
        wait_for("allowed_hosts back to its value",
                 lambda: (lambda v: (v == admin.execute("SHOW pg_notifier.allowed_hosts")
                                     .fetchone()[0], v))(
                     db.execute("SHOW pg_notifier.allowed_hosts").fetchone()[0]), 10)

    # headers
    bad_headers = [
        ("an array", "[]"), ("a string", '"X-A: b"'), ("a number", "1"), ("JSON null", "null"),
        ("a number value", '{"X-A": 1}'), ("a null value", '{"X-A": null}'),
        ("an array value", '{"X-A": ["a"]}'), ("an object value", '{"X-A": {"b": "c"}}'),
        ("a boolean value", '{"X-A": true}'), ("an empty name", '{"": "v"}'),
        ("a space in the name", '{"X A": "v"}'), ("a colon in the name", '{"X:A": "v"}'),
        ("CR LF in the name", '{"X\\r\\nA": "v"}'), ("non-ASCII name", '{"Xé": "v"}'),
        ("parentheses in the name", '{"X(A)": "v"}'),
        ("CR LF in a value", '{"X-A": "v\\r\\nInjected: 1"}'), ("LF in a value", '{"X-A": "v\\n"}'),
        ("CR in a value", '{"X-A": "v\\r"}'),
    ]
    for what, h in bad_headers:
        E(f"headers: {what}", {"headers": h}, [["header"]], ("22023",))
    for name in ("Content-Type", "user-agent", "Webhook-Id", "WEBHOOK-TIMESTAMP",
                 "webhook-signature", "Content-Length", "Host"):
        E(f"headers: reserved {name}", {"headers": json.dumps({name: "x"})},
          [["header"], [name.lower(), "reserved"]], ("22023",))
    # secret
    for what, s in (("empty", ""), ("whsec_ and nothing", "whsec_"),
                    ("whsec_ + invalid base64", "whsec_not*base64!"),
                    ("whsec_ + '%%%%'", "whsec_%%%%")):
        E(f"secret: {what}", {"secret": s}, [["secret"]], ("22023",))
    # numbers
    for arg, vals, words in (("batch_size", (0, -1, 1001), ["batch"]),
                             ("max_attempts", (0, -1, 101), ["attempts"]),
                             ("timeout_ms", (0, -5, 600001), ["timeout"]),
                             ("concurrency", (0, -1, 101), ["concurrency"])):
        for v in vals:
            E(f"{arg} => {v}", {arg: v}, [words], ("22023",))
    n = db.execute("SELECT count(*) FROM notifier.routes").fetchone()[0]
    ctx.check(n == n_routes, f"failed add_webhook calls left {n - n_routes} rows in notifier.routes")
    db.execute("DELETE FROM notifier.routes WHERE channel = 'wh_bad'")   # what was wrongly accepted
    log(f"{cases} bad add_webhook calls")

    # the limits themselves are fine
    good = [
        ("63-byte channel", {"channel": "c" * 63}),
        ("31 x 'é' + 'x' channel", {"channel": "é" * 31 + "x"}),
        ("batch_size 1000", {"batch_size": 1000}), ("max_attempts 100", {"max_attempts": 100}),
        ("timeout_ms 600000", {"timeout_ms": 600000}), ("concurrency 100", {"concurrency": 100}),
        ("all minimums", {"batch_size": 1, "max_attempts": 1, "timeout_ms": 1, "concurrency": 1}),
        ("https, userinfo, query", {"url": "https://user:p%40ss@example.com:8443/a/b?x=1&y=2"}),
        ("IPv6 literal", {"url": "http://[::1]:8080/hook"}),
        ("token characters in a header name",
         {"headers": {"X-Tok!#$%&'*+-.^_`|~09azAZ": "v"}}),
        ("tab and UTF-8 in a header value", {"headers": {"X-A": "a\tb é"}}),
        ("valid whsec_ secret", {"secret": "whsec_" + base64.b64encode(b"k" * 32).decode()}),
        ("a plain secret", {"secret": "x"}),
        ("ordered, batched", {"ordered": True, "batch_size": 5}),
    ]
    for what, args in good:
        full = dict(base)
        full.update(args)
        try:
            rid = add_webhook(db, **full)
            db.execute("SELECT notifier.remove_route(%s)", (rid,))
        except psycopg.Error as ex:
            ctx.check(False, f"add_webhook with {what} refused: {describe_error(ex)}")
    n = db.execute("SELECT count(*) FROM notifier.routes").fetchone()[0]
    ctx.check(n == n_routes, f"{n - n_routes} routes left after add_webhook + remove_route")
    log(f"{len(good)} boundary / unusual but valid calls accepted (and removed)")


def step_role(ctx, admin):
    db = ctx.db
    secret = "role-secret-" + os.urandom(6).hex()
    rid = add_webhook(db, channel="wh_role", url="http://127.0.0.1:9/role", secret=secret,
                      headers={"X-Role": "r"})
    rid2 = add_webhook(db, channel="wh_role", url="http://127.0.0.1:9/role2")
    try:
        rows = db.execute("SELECT id, secret FROM notifier.route_list WHERE id IN (%s, %s) "
                          "ORDER BY id", (rid, rid2)).fetchall()
        ctx.check(rows == [(rid, "********"), (rid2, None)],
                  f"route_list to a superuser: secrets {rows}, expected '********' and NULL")
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(ROLE)))
        with connect(DB, user=ROLE) as u:
            U = lambda w, q, p=None: expect_error(ctx, u, w, q, p, need=[["permission denied"]],  # noqa: E731
                                                   codes=("42501",))
            U("non-superuser: add_webhook", "SELECT notifier.add_webhook('wh_role', 'http://127.0.0.1:9/x')")
            U("non-superuser: remove_route", "SELECT notifier.remove_route(%s)", (rid,))
            U("non-superuser: redeliver", "SELECT notifier.redeliver(1)")
            U("non-superuser: redeliver_dead", "SELECT notifier.redeliver_dead(%s)", (rid,))
            U("non-superuser: SELECT notifier.routes", "SELECT * FROM notifier.routes")
            U("non-superuser: SELECT secret FROM routes", "SELECT secret FROM notifier.routes")
            U("non-superuser: SELECT notifier.deliveries", "SELECT * FROM notifier.deliveries")
            U("non-superuser: SELECT payload FROM deliveries",
              "SELECT payload FROM notifier.deliveries LIMIT 1")
            U("non-superuser: UPDATE notifier.deliveries",
              "UPDATE notifier.deliveries SET status = 'pending'")
            U("non-superuser: SELECT notifier.route_list", "SELECT * FROM notifier.route_list")

            admin_db = db
            admin_db.execute(sql.SQL("GRANT pg_monitor TO {}").format(ident(ROLE)))
            try:
                rl = u.execute("SELECT id, secret, row_to_json(r)::text FROM notifier.route_list r "
                               "WHERE id IN (%s, %s) ORDER BY id", (rid, rid2)).fetchall()
                ctx.check([(r[0], r[1]) for r in rl] == [(rid, "********"), (rid2, None)],
                          f"route_list to a pg_monitor member: {[(r[0], r[1]) for r in rl]}")
                ctx.check(all(secret not in r[2] for r in rl),
                          "route_list shows the secret to a pg_monitor member")
                st = u.execute("SELECT coalesce(string_agg(s::text, ' '), '') FROM notifier.stats s")
                ctx.check(secret not in st.fetchone()[0], "notifier.stats shows the secret")
                log(f"pg_monitor member: route_list secret {rl[0][1]!r} (and NULL without one); "
                    "the secret appears nowhere in route_list or stats")
                U("pg_monitor member: SELECT secret FROM routes", "SELECT secret FROM notifier.routes")
                U("pg_monitor member: SELECT deliveries", "SELECT * FROM notifier.deliveries")
                U("pg_monitor member: add_webhook",
                  "SELECT notifier.add_webhook('wh_role', 'http://127.0.0.1:9/x')")
            finally:
                admin_db.execute(sql.SQL("REVOKE pg_monitor FROM {}").format(ident(ROLE)))

            # "only superuser (or an explicit grant) can add/remove routes"
            grant = sql.SQL("EXECUTE ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, "
                            "integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval), "
                            "notifier.remove_route(bigint)")
            db.execute(sql.SQL("GRANT {} TO {}").format(grant, ident(ROLE)))
            try:
                r3 = u.execute("SELECT notifier.add_webhook('wh_role', 'http://127.0.0.1:9/granted', "
                               "secret => 'granted-secret')").fetchone()[0]
                u.execute("SELECT notifier.remove_route(%s)", (r3,))
                log("non-superuser with GRANT EXECUTE on add_webhook and remove_route: "
                    "add_webhook and remove_route work")
            except psycopg.Error as ex:
                ctx.check(False, "non-superuser granted EXECUTE on add_webhook/remove_route cannot "
                                 f"add/remove a webhook route: {describe_error(ex)}")
            U("EXECUTE granted: SELECT secret FROM routes still denied",
              "SELECT secret FROM notifier.routes")
            db.execute(sql.SQL("REVOKE {} FROM {}").format(grant, ident(ROLE)))
    finally:
        for r in (rid, rid2):
            db.execute("SELECT notifier.remove_route(%s)", (r,))
        db.execute("DELETE FROM notifier.routes WHERE channel = 'wh_role'")


def check_bodies_and_ids(ctx, what, reqs, rid, batched=False):
    """webhook-id of each request: the first event's id, or delivery-<row id>
    for an event without one (that row must hold the event)."""
    problems = []
    rows = {r["id"]: r for r in route_rows(ctx.db, rid)}
    for r in reqs:
        try:
            body = canon(parse(r.body))
        except (ValueError, UnicodeDecodeError) as ex:
            problems.append(f"body not JSON ({ex}): {short(r.body)}")
            continue
        first = body[0] if batched and isinstance(body, list) and body else body
        eid = event_id(first)
        if eid is not None:
            if r.wid != eid:
                problems.append(f"webhook-id {r.wid!r}, event id {eid!r}")
        else:
            m = re.fullmatch(r"delivery-(\d+)", r.wid or "")
            if not m:
                problems.append(f"webhook-id {r.wid!r} for an event without id {short(first, 60)}")
            elif int(m.group(1)) not in rows:
                problems.append(f"webhook-id {r.wid!r}: no such row of route {rid}")
            elif canon(parse(rows[int(m.group(1))]["payload"])) != first:
                problems.append(f"webhook-id {r.wid!r}: that row holds "
                                f"{short(rows[int(m.group(1))]['payload'], 60)}, "
                                f"the body {short(first, 60)}")
    ctx.check_list(f"{what}: webhook-id", problems)


def check_rows_delivered_once(ctx, what, rid, n, attempts=1):
    rows = route_rows(ctx.db, rid)
    bad = [f"row {r['id']}: {r['status']}, attempts {r['attempts']}, "
           f"http {r['last_http_status']}, delivered_at {r['delivered_at']}" for r in rows
           if r["status"] != "delivered" or r["attempts"] != attempts
           or r["last_http_status"] != 200 or r["delivered_at"] is None
           or r["delivered_at"] < r["received_at"]]
    ctx.check(len(rows) == n, f"{what}: {len(rows)} rows in notifier.deliveries, expected {n}")
    ctx.check_list(f"{what}: deliveries rows not (delivered, attempts {attempts}, 200)", bad)
    ids = [(r["event_id"], event_id(canon(parse(r["payload"])))) for r in rows]
    ctx.check_list(f"{what}: deliveries.event_id", [f"event_id {a!r}, payload id {b!r}"
                                                    for a, b in ids if b is not None and a != b])
    return rows


def step_mixed(ctx, admin):
    db, R = ctx.db, ctx.rcv
    db.execute("CREATE TABLE mix_t (id int PRIMARY KEY, n int, s text, j jsonb, "
               "t timestamptz DEFAULT now())")
    db.execute("SELECT notifier.watch('mix_t', channel => 'wh_mixed', delivery => 'notify')")
    whsec = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    ra = {"channel": "wh_mixed", "url": R.url("/mixed-a"),
          "headers": {"X-Token": "abc", "X-Trace": "mixed run 1"},
          "secret": "pläin secret", "concurrency": 4}
    rb = {"channel": "wh_mixed", "url": R.url("/mixed-b"), "secret": whsec, "ordered": True}
    R.on("/mixed-a", ok(0.005))
    R.on("/mixed-b", ok())
    lis = Listener(DB, ["wh_mixed"])
    try:
        ids = ctx.add_routes({"/mixed-a": ra, "/mixed-b": rb})
        id_a, id_b = ids["/mixed-a"], ids["/mixed-b"]
        rl = db.execute("SELECT id, kind, target, headers::text, secret, batch_size, max_attempts, "
                        "timeout_ms, concurrency, ordered FROM notifier.route_list "
                        "WHERE id IN (%s, %s) ORDER BY id", (id_a, id_b)).fetchall()
        ctx.check([r[1:3] for r in rl] == [("webhook", ra["url"]), ("webhook", rb["url"])]
                  and [r[4] for r in rl] == ["********", "********"]
                  and [tuple(r[5:]) for r in rl] == [(1, 10, 5000, 4, "none"), (1, 10, 5000, 8, "route")]
                  and json.loads(rl[0][3]) == ra["headers"] and json.loads(rl[1][3]) == {},
                  f"route_list rows: {rl}")

        t0 = time.monotonic()
        rnd = random.Random(5)
        with connect(DB, autocommit=False) as c:
            live, nxt = [], 1
            for t in range(25):
                n = rnd.randint(5, 12)
                c.execute("INSERT INTO mix_t (id, n, s, j) SELECT g, g %% 7, md5(g::text), "
                          "jsonb_build_object('g', g, 'f', g / 4.0, 'a', jsonb_build_array(g, null, 'x')) "
                          "FROM generate_series(%s::int, %s::int) g", (nxt, nxt + n - 1))
                live += range(nxt, nxt + n)
                nxt += n
                c.execute("UPDATE mix_t SET n = n + 100, s = s || 'ü' WHERE id = ANY(%s)",
                          (rnd.sample(live, 4),))
                if t % 3 == 2:
                    dele = rnd.sample(live, 2)
                    c.execute("DELETE FROM mix_t WHERE id = ANY(%s)", (dele,))
                    live = [i for i in live if i not in dele]
                if t % 5 == 0:
                    c.execute("SELECT pg_notify('wh_mixed', %s)",
                              (["not json", '{"raw": 1, "no": "id"}', "[1, 2.50, null]", "42",
                                "{\"raw\": \"é\\u00e9\"}"][t // 5],))
                if t == 7:
                    c.rollback()          # nothing of it may arrive
                    continue
                c.commit()
            c.execute("SET pg_notifier.max_payload_bytes = 1024")
            c.execute("INSERT INTO mix_t (id, n, s) VALUES (%s, 0, %s)", (nxt, text_of(3000, 1)))
            c.commit()
            c.execute("RESET pg_notifier.max_payload_bytes")
            c.execute("NOTIFY wh_mixed, 'END-mixed'")
            c.commit()
        heard = [n.payload for n in lis.until(lambda ch, p: p == "END-mixed", 30, "END-mixed")]
        t_prod = time.monotonic() - t0
        want = expected_events(db, heard)
        n = len(want)
        refs = sum(1 for p in heard if '"truncated":true' in p.replace(" ", ""))
        log(f"workload: {n} events heard by the LISTEN client ({refs} oversize reference(s)) "
            f"in {t_prod:.2f} s")
        ctx.check(n > 200 and refs == 1, f"the workload sent {n} events, {refs} references")

        _, secs_a = ctx.wait_final(id_a, n, 30, "route A")
        _, secs_b = ctx.wait_final(id_b, n, 30, "route B (ordered)")
        took_ms = (time.monotonic() - t0) * 1000
        ctx.timing(f"mixed: {n} events delivered to both routes after",
                   f"{took_ms / 1000:.2f} s from the first commit")
        reqs_a, reqs_b = R.requests("/mixed-a"), R.requests("/mixed-b")
        for what, reqs, route in (("route A", reqs_a, ra), ("route B", reqs_b, rb)):
            ctx.check(len(reqs) == n, f"{what}: {len(reqs)} requests for {n} events")
            ctx.check_list(f"{what}: requests", [f"request #{r.seq}: {'; '.join(pr)}" for r in reqs
                                                 for pr in [request_problems(r, route)] if pr])
        got_a = collections.Counter(key(canon(parse(r.body))) for r in reqs_a)
        want_c = collections.Counter(key(e) for e in want)
        if ctx.check(got_a == want_c, f"route A: bodies differ from the events: "
                                      f"{sum((want_c - got_a).values())} missing, "
                                      f"{sum((got_a - want_c).values())} unexpected, e.g. "
                                      f"missing {short(next(iter(want_c - got_a), ''), 150)}, "
                                      f"unexpected {short(next(iter(got_a - want_c), ''), 150)}"):
            log(f"route A (concurrency 4): the {n} bodies are the {n} events the LISTEN client saw "
                f"(oversize resolved, non-JSON as JSON strings)")
        got_b = [canon(parse(r.body)) for r in reqs_b]
        bad = [i for i, (g, w) in enumerate(zip(got_b, want)) if g != w]
        if ctx.check(len(got_b) == n and not bad,
                     f"route B (ordered): {len(bad)} bodies out of place, first at #{bad[:1]}: "
                     f"got {short(got_b[bad[0]] if bad else None)}, "
                     f"expected {short(want[bad[0]] if bad else None)}"):
            log(f"route B (ordered): the {n} bodies in exactly the LISTEN client's order")
        check_bodies_and_ids(ctx, "route A", reqs_a, id_a)
        check_bodies_and_ids(ctx, "route B", reqs_b, id_b)
        ctx.check(all(r.status == 200 for r in reqs_a + reqs_b), "the receiver did not answer 200")
        rows_a = check_rows_delivered_once(ctx, "route A", id_a, n)
        check_rows_delivered_once(ctx, "route B", id_b, n)
        got_rows = collections.Counter(key(canon(parse(r["payload"]))) for r in rows_a)
        ctx.check(got_rows == want_c, "route A: notifier.deliveries.payload differs from the events")

        mx_a, mx_b = R.max_inflight["/mixed-a"], R.max_inflight["/mixed-b"]
        ctx.check(mx_a <= 4, f"route A (concurrency 4): {mx_a} requests in flight at once")
        ctx.check(mx_b <= 1, f"route B (ordered): {mx_b} requests in flight at once")
        if mx_a < 2:
            ctx.note(f"route A (concurrency 4): never more than {mx_a} request in flight")
        # both routes go to one host:port and share the connection cache
        conns_a = len({r.conn for r in reqs_a})
        conns_b = len({r.conn for r in reqs_b})
        conns = len({r.conn for r in reqs_a + reqs_b})
        ctx.check(conns <= 4 + 1 + 3, f"{2 * n} requests of routes A (concurrency 4) and B "
                                      f"(ordered) on {conns} connections (keep-alive?)")
        ua = reqs_a[0].header("user-agent") if reqs_a else None
        ext = db.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_notifier'").fetchone()[0]
        if ua != f"pg_notifier/{ext}":
            ctx.note(f"User-Agent {ua!r}, extension version {ext}")
        lat = sorted((r["delivered_at"] - r["received_at"]).total_seconds() * 1000 for r in rows_a)
        log(f"max in flight: A {mx_a} (limit 4), B {mx_b}; connections: A {conns_a}, B {conns_b}; "
            f"User-Agent {ua!r}; headers, custom headers, webhook-id, webhook-timestamp, "
            f"signatures (plain and whsec_) verified on {2 * n} requests")
        ctx.timing("mixed: deliveries received_at -> delivered_at p50 (route A)",
                   f"{lat[len(lat) // 2]:.1f} ms")
        for rid, path in ((id_a, "/mixed-a"), (id_b, "/mixed-b")):
            ctx.expect[rid] = {"path": path, "events": n, "delivered": n, "dead": 0,
                               "retried": False, "status": 200, "latency": took_ms}
    finally:
        lis.close()


def step_batch(ctx, admin):
    db, R = ctx.db, ctx.rcv
    watched_table(db, "batch_t", "wh_batch")
    route = {"channel": "wh_batch", "url": R.url("/batch"), "secret": "batch-secret",
             "batch_size": 10, "headers": {"X-Batch": "yes"}}
    R.on("/batch", ok())
    lis = Listener(DB, ["wh_batch"])
    try:
        rid = ctx.add_routes({"/batch": route})["/batch"]
        t0 = time.monotonic()
        with connect(DB) as c:
            c.execute("INSERT INTO batch_t SELECT g, 'v' || g FROM generate_series(1, 45) g")
            c.execute("UPDATE batch_t SET v = v || '!' WHERE id % 3 = 0")
            c.execute("DELETE FROM batch_t WHERE id > 40")
            for g in range(46, 61):
                c.execute("INSERT INTO batch_t VALUES (%s, 'single')", (g,))
            c.execute("INSERT INTO batch_t SELECT g, 'w' FROM generate_series(61, 90) g")
            c.execute("NOTIFY wh_batch, 'END-batch'")
        heard = [n.payload for n in lis.until(lambda ch, p: p == "END-batch", 30, "END-batch")]
        want = expected_events(db, heard)
        n = len(want)
        index = {key(e): i for i, e in enumerate(want)}
        ctx.check(len(index) == n, "the batch workload has duplicate events")
        ctx.wait_final(rid, n, 30, "batch route")
        took_ms = (time.monotonic() - t0) * 1000
        reqs = R.requests("/batch")
        problems, seen, sizes = [], collections.Counter(), []
        for r in reqs:
            problems += [f"request #{r.seq}: {p}" for p in request_problems(r, route)]
            body = canon(parse(r.body))
            if not isinstance(body, list):
                problems.append(f"request #{r.seq}: body is not an array: {short(r.body)}")
                continue
            sizes.append(len(body))
            if not 1 <= len(body) <= 10:
                problems.append(f"request #{r.seq}: {len(body)} events (batch_size 10)")
            pos = [index.get(key(e)) for e in body]
            if None in pos:
                problems.append(f"request #{r.seq}: unknown event {short(body[pos.index(None)])}")
            elif pos != sorted(pos):
                problems.append(f"request #{r.seq}: events out of order within the batch: {pos}")
            seen.update(key(e) for e in body)
        ctx.check_list("batch requests", problems)
        missing = [k for k in index if seen[k] == 0]
        twice = [k for k, c in seen.items() if c > 1]
        ctx.check(not missing and not twice,
                  f"batch: {len(missing)} events never delivered, {len(twice)} delivered twice")
        check_bodies_and_ids(ctx, "batch", reqs, rid, batched=True)
        check_rows_delivered_once(ctx, "batch", rid, n)
        ctx.check(sizes and max(sizes) == 10, f"batch sizes {sizes}: never a full batch of 10")
        log(f"{n} events in {len(reqs)} requests, batch sizes {sorted(collections.Counter(sizes).items())}; "
            f"each event once, in order within each batch, webhook-id = first event id, signed")
        ctx.expect[rid] = {"path": "/batch", "events": n, "delivered": (n, len(reqs)), "dead": 0,
                           "retried": False, "status": 200, "latency": took_ms}
    finally:
        lis.close()


def step_batch_retry(ctx, admin):
    """A batch is one message: with batch_size 5 and a receiver that answers
    503 to the first two attempts of every webhook-id while events keep
    arriving, each webhook-id always carries the same events in the same
    order, no event travels under two ids, and every event is delivered.
    Two routes: concurrency 4, and ordered (whose messages are also in
    commit order)."""
    db, R = ctx.db, ctx.rcv
    watched_table(db, "batch_retry_t", "wh_batch_retry")
    routes = {"/batch-retry": {"channel": "wh_batch_retry", "url": R.url("/batch-retry"),
                               "secret": "br-secret", "batch_size": 5, "concurrency": 4},
              "/batch-retry-ord": {"channel": "wh_batch_retry", "url": R.url("/batch-retry-ord"),
                                   "batch_size": 5, "ordered": True}}
    tries, lock = collections.Counter(), threading.Lock()

    def fail_first_two(k, r):
        with lock:
            tries[(r.path, r.wid)] += 1
            return (503, [], 0.0) if tries[(r.path, r.wid)] <= 2 else (200, [], 0.0)
    for path in routes:
        R.on(path, fail_first_two)
    lis = Listener(DB, ["wh_batch_retry"])
    try:
        ids = ctx.add_routes(routes)
        with connect(DB) as c:
            # small transactions, paced so that retries come due while new
            # events are still arriving
            for t in range(60):
                c.execute("INSERT INTO batch_retry_t SELECT g, 'v' FROM generate_series(%s::int, %s::int) g",
                          (t * 3 + 1, t * 3 + 1 + t % 3))
                time.sleep(0.01)
            c.execute("NOTIFY wh_batch_retry, 'END-batch-retry'")
        heard = [n.payload for n in lis.until(lambda ch, p: p == "END-batch-retry", 30,
                                              "END-batch-retry")]
        want = expected_events(db, heard)
        n = len(want)
        for path, route in routes.items():
            ctx.wait_final(ids[path], n, 60, f"{path} route")
            reqs = R.requests(path)
            problems = [f"request #{r.seq}: {p}" for r in reqs for p in request_problems(r, route)]
            by_wid, wid_of, delivered, order = {}, {}, set(), []
            for r in reqs:
                body = canon(parse(r.body))
                evs = [event_id(e) for e in (body if isinstance(body, list) else [body])]
                if by_wid.setdefault(r.wid, evs) != evs:
                    problems.append(f"webhook-id {r.wid} attempt {tries_seen(reqs, r)}: events "
                                    f"{evs}, first attempt {by_wid[r.wid]}")
                for e in evs:
                    if wid_of.setdefault(e, r.wid) != r.wid:
                        problems.append(f"event {e} under webhook-ids {wid_of[e]} and {r.wid}")
                if r.status == 200:
                    delivered.update(evs)
                    order += evs
            ctx.check_list(f"{path}: one message per webhook-id", problems, limit=6)
            attempts = collections.Counter(r.wid for r in reqs)
            ctx.check_list(f"{path}: requests per webhook-id (2 x 503, then 200)",
                           [f"{w}: {k}" for w, k in attempts.items() if k != 3])
            missing = [event_id(e) for e in want if event_id(e) not in delivered]
            ctx.check(not missing, f"{path}: {len(missing)} of {n} events never delivered "
                                   f"(a 2xx): {missing[:5]}")
            multi = sum(1 for evs in by_wid.values() if len(evs) > 1)
            ctx.check(multi > 0, f"{path}: no request carried more than one event")
            if route.get("ordered"):
                ctx.check(order == [event_id(e) for e in want],
                          f"{path}: events accepted out of commit order")
            log(f"{path}: {n} events in {len(by_wid)} messages ({multi} of several events), "
                f"{len(reqs)} requests; checked: each webhook-id carries the same events at each attempt")
    finally:
        lis.close()


def tries_seen(reqs, r):
    """The attempt number of request r among the requests of its webhook-id."""
    return 1 + sum(1 for q in reqs if q.wid == r.wid and q.seq < r.seq)


def step_ordered_key(ctx, admin):
    """ordered => 'key': a receiver that fails (5xx) a third of the requests
    at random and answers after a random delay; 12 keys updated 12 times
    each, in random interleavings.  Per key, the order of first 2xx is the
    commit order, and no request of a key starts before the previous event
    of the key had its 2xx; different keys are in flight together."""
    db, R = ctx.db, ctx.rcv
    watched_table(db, "key_t", "wh_key", "id int PRIMARY KEY, v int")
    routes = {"/key": {"channel": "wh_key", "url": R.url("/key"), "ordered": "key",
                       "concurrency": 8},
              "/key-batch": {"channel": "wh_key", "url": R.url("/key-batch"), "ordered": "key",
                             "concurrency": 4, "batch_size": 3}}
    rnd, lock = random.Random(16), threading.Lock()

    def flaky(k, r):
        with lock:
            fail, delay = rnd.random() < 0.33, rnd.random() * 0.02
        return (rnd.choice((500, 503)) if fail else 200, [], delay)
    for path in routes:
        R.on(path, flaky)
    lis = Listener(DB, ["wh_key"])
    keys = 12
    try:
        ids = ctx.add_routes(routes)
        with connect(DB) as c:
            c.execute("INSERT INTO key_t SELECT g, 0 FROM generate_series(1, %s) g", (keys,))
            order = [k for k in range(1, keys + 1) for _ in range(12)]
            random.Random(7).shuffle(order)
            for i in range(0, len(order), 3):
                with c.transaction():
                    for k in order[i:i + 3]:
                        c.execute("UPDATE key_t SET v = v + 1 WHERE id = %s", (k,))
            c.execute("NOTIFY wh_key, 'END-key'")
        heard = [n.payload for n in lis.until(lambda ch, p: p == "END-key", 30, "END-key")]
        want = expected_events(db, heard)
        n = len(want)
        # the END NOTIFY is no event of the table: a key of its own
        key_of = {event_id(e): key(e["key"]) if isinstance(e, dict) else "END" for e in want}
        commit = collections.defaultdict(list)
        for e in want:
            commit[key_of[event_id(e)]].append(event_id(e))
        for path in routes:
            ctx.wait_final(ids[path], n, 90, f"{path} route")
            reqs = R.requests(path)
            problems, first_ok, ok_at, sent = [], {}, {}, collections.defaultdict(list)
            for r in sorted(reqs, key=lambda q: q.t0):
                body = canon(parse(r.body))
                evs = [event_id(e) for e in (body if isinstance(body, list) else [body])]
                ks = [key_of.get(e) for e in evs]
                if len(set(ks)) != len(ks):
                    problems.append(f"request #{r.seq} carries two events of one key: {evs}")
                for e in evs:
                    sent[e].append(r)
                    if r.status == 200 and e not in first_ok:
                        first_ok[e] = len(first_ok)
                        ok_at[e] = r.t1
            for k, evs in commit.items():
                got = sorted((e for e in evs if e in first_ok), key=first_ok.get)
                if got != evs:
                    # what the route's rows say of the events without a 2xx
                    rows = db.execute("SELECT event_id, status, attempts, last_http_status, "
                                      "last_error FROM notifier.deliveries WHERE route_id = %s "
                                      "AND event_id = ANY(%s)",
                                      (ids[path], [e for e in evs if e not in first_ok])).fetchall()
                    problems.append(f"key {k}: first 2xx in order {got}, commit order {evs}; "
                                    f"rows of those without a 2xx: {rows}; requests: "
                                    f"{[(r.seq, r.status) for e in evs if e not in first_ok for r in sent[e]]}")
                    continue
                for prev, nxt in zip(evs, evs[1:]):
                    early = [r.seq for r in sent[nxt] if r.t0 < ok_at[prev]]
                    if early:
                        problems.append(f"key {k}: event {nxt} sent (request #{early[0]}) before "
                                        f"event {prev} had its 2xx")
            ctx.check_list(f"{path}: per-key order", problems, limit=4)
            failed = sum(1 for r in reqs if r.status != 200)
            ctx.check(failed > 0, f"{path}: the receiver never failed a request")
            ctx.check(R.max_inflight[path] > 1,
                      f"{path}: never more than one request in flight: keys did not overlap")
            log(f"{path}: {n} events of {keys} keys in {len(reqs)} requests ({failed} failed); "
                f"checked: per key in commit order, each after the previous one's 2xx; up to "
                f"{R.max_inflight[path]} requests in flight")
    finally:
        lis.close()


def step_ordered(ctx, admin):
    db, R = ctx.db, ctx.rcv
    watched_table(db, "ord_t", "wh_ordered", "id int PRIMARY KEY, v int")
    r1 = {"channel": "wh_ordered", "url": R.url("/ordered"), "ordered": True, "concurrency": 8}
    r2 = {"channel": "wh_ordered", "url": R.url("/ordered-dead"), "ordered": True, "max_attempts": 2}
    R.on("/ordered", fail_first(3, 500, delay=0.002))
    R.on("/ordered-dead", fail_first(2, 500))
    lis = Listener(DB, ["wh_ordered", "wh_ordered_end"])
    try:
        ids = ctx.add_routes({"/ordered": r1, "/ordered-dead": r2})
        with connect(DB) as c:
            for t in range(12):
                c.execute("INSERT INTO ord_t SELECT g, 0 FROM generate_series(%s::int, %s::int) g",
                          (t * 5 + 1, t * 5 + 5))
                if t % 4 == 3:
                    c.execute("UPDATE ord_t SET v = v + 1 WHERE id = %s", (t * 5,))
            c.execute("NOTIFY wh_ordered_end, 'END-ordered'")     # a channel without routes
        heard = [n.payload for n in lis.until(lambda ch, p: p == "END-ordered", 30, "END-ordered")
                 if n.channel == "wh_ordered"]
        want = expected_events(db, heard)
        n = len(want)
        wids = [event_id(e) for e in want]
        ctx.wait_final(ids["/ordered"], n, 20, "ordered route")
        ctx.wait_final(ids["/ordered-dead"], n, 20, "ordered route with a dead head")

        reqs = R.requests("/ordered")
        st = [r.status for r in reqs]
        ctx.check(st[:3] == [500, 500, 500] and all(s == 200 for s in st[3:]),
                  f"ordered: statuses {st[:6]}...")
        ctx.check(len(reqs) == n + 3, f"ordered: {len(reqs)} requests for {n} events + 3 failures")
        head = [r.wid for r in reqs[:4]]
        ctx.check(head == [wids[0]] * 4, f"ordered: the first 4 requests were for {head}, "
                                         f"expected the head {wids[0]} each time")
        accepted = [canon(parse(r.body)) for r in reqs if r.status == 200]
        ctx.check(accepted == want, "ordered: the accepted events are not exactly the commit order")
        overlap = [(a.seq, b.seq) for a, b in zip(reqs, reqs[1:]) if b.t0 < a.t1 - 0.001]
        ctx.check(R.max_inflight["/ordered"] == 1 and not overlap,
                  f"ordered: {R.max_inflight['/ordered']} requests in flight at once, "
                  f"overlapping pairs {overlap[:5]}")
        g = gaps(reqs[:4])
        ctx.check(all(x <= RETRY_MAX_MS / 1000 + SLACK for x in g),
                  f"ordered: retry gaps of the head {[round(x, 3) for x in g]} s "
                  f"(retry_max_ms {RETRY_MAX_MS})")
        rows = route_rows(db, ids["/ordered"])
        ctx.check(rows[0]["attempts"] == 4 and rows[0]["status"] == "delivered"
                  and rows[0]["last_http_status"] == 200,
                  f"ordered: head row {rows[0]['status']}, attempts {rows[0]['attempts']}, "
                  f"http {rows[0]['last_http_status']}")
        ctx.check(all(r["status"] == "delivered" and r["attempts"] == 1 for r in rows[1:]),
                  "ordered: rows after the head not all delivered at attempt 1")
        log(f"ordered: {n} events; 3 x 500 on the head, retried after "
            f"{', '.join(f'{x * 1000:.0f}' for x in g)} ms; accepted order = commit order; "
            f"max 1 in flight, no overlap")

        reqs = R.requests("/ordered-dead")
        rids = [r.wid for r in reqs]
        ctx.check(rids[:2] == [wids[0]] * 2 and rids[2:] == wids[1:],
                  f"ordered, dead head: request ids {rids[:4]}..., expected the head twice, "
                  f"then the rest in commit order")
        ctx.check([r.status for r in reqs[:2]] == [500, 500] and len(reqs) == n + 1,
                  f"ordered, dead head: {len(reqs)} requests, statuses {[r.status for r in reqs[:4]]}")
        rows = route_rows(db, ids["/ordered-dead"])
        ctx.check((rows[0]["status"], rows[0]["attempts"], rows[0]["last_http_status"])
                  == ("dead", 2, 500),
                  f"ordered, dead head: head row {rows[0]['status']}, attempts {rows[0]['attempts']}, "
                  f"http {rows[0]['last_http_status']}, expected dead, 2, 500")
        ctx.check(all(r["status"] == "delivered" for r in rows[1:]),
                  "ordered, dead head: later rows not all delivered")
        ctx.check(R.max_inflight["/ordered-dead"] == 1,
                  f"ordered, dead head: {R.max_inflight['/ordered-dead']} requests in flight")
        log("ordered with max_attempts 2: the head failed twice, went dead, then the other "
            f"{n - 1} events followed in commit order")
        ctx.expect[ids["/ordered"]] = {"path": "/ordered", "events": n, "delivered": n, "dead": 0,
                                       "retried": True, "status": 200}
        ctx.expect[ids["/ordered-dead"]] = {"path": "/ordered-dead", "events": n,
                                            "delivered": n - 1, "dead": 1, "retried": True,
                                            "status": 200}
    finally:
        lis.close()


CODES = [   # path, behaviour, extra add_webhook args, (status, attempts, last_http_status)
    ("/c500", fail_first(2, 500), {}, ("delivered", 3, 200)),
    ("/c503", fail_first(1, 503), {}, ("delivered", 2, 200)),
    ("/c408", fail_first(1, 408), {}, ("delivered", 2, 200)),
    ("/c425", fail_first(1, 425), {}, ("delivered", 2, 200)),
    ("/c302", fail_first(1, 302, [("Location", "/c302-target")]), {}, ("delivered", 2, 200)),
    ("/c201", always(201), {}, ("delivered", 1, 201)),
    ("/c204", always(204), {}, ("delivered", 1, 204)),
    ("/c404", always(404), {}, ("dead", 1, 404)),
    ("/c400", always(400), {}, ("dead", 1, 400)),
    ("/c401", always(401), {}, ("dead", 1, 401)),
    ("/c410", always(410), {}, ("dead", 1, 410)),
    ("/c422", always(422), {}, ("dead", 1, 422)),
    ("/c500dead", always(500), {"max_attempts": 4}, ("dead", 4, 500)),
]


def step_codes(ctx, admin):
    db, R = ctx.db, ctx.rcv
    watched_table(db, "codes_t", "wh_codes")
    routes = {}
    for path, fn, extra, _ in CODES:
        R.on(path, fn)
        routes[path] = dict({"channel": "wh_codes", "url": R.url(path)}, **extra)
    ids = ctx.add_routes(routes)
    ctx.known_paths.add("/c302-target")
    t0 = time.monotonic()
    db.execute("INSERT INTO codes_t VALUES (1, 'one event, 13 routes')")
    # watch the always-500 route while it backs off
    samples = []
    rid500 = ids["/c500dead"]

    def probe():
        st = db.execute("SELECT route_id, status FROM notifier.deliveries WHERE route_id = ANY(%s)",
                        (list(ids.values()),)).fetchall()
        done = len(st) == len(ids) and all(x[1] in ("delivered", "dead") for x in st)
        names = {v: k for k, v in ids.items()}
        row = db.execute("SELECT status, attempts, next_attempt_at, updated_at, now() "
                         "FROM notifier.deliveries WHERE route_id = %s", (rid500,)).fetchone()
        if row is not None and row[0] == "pending" and row[1] >= 1:
            samples.append(row)
        return done, {names[x[0]]: x[1] for x in st if x[1] not in ("delivered", "dead")}
    wait_for("one event to 13 routes settled (delivered or dead)", probe, 20, interval=0.01)
    secs = time.monotonic() - t0
    time.sleep(0.7)        # dead means dead: nothing more may come
    ev = None
    for path, fn, extra, (status, attempts, code) in CODES:
        rid = ids[path]
        rows = route_rows(db, rid)
        reqs = R.requests(path)
        if not ctx.check(len(rows) == 1, f"{path}: {len(rows)} rows in notifier.deliveries"):
            continue
        r = rows[0]
        got = (r["status"], r["attempts"], r["last_http_status"])
        ctx.check(got == (status, attempts, code),
                  f"{path}: row (status, attempts, last_http_status) = {got}, expected "
                  f"{(status, attempts, code)}; last_error {r['last_error']!r}")
        ctx.check(len(reqs) == attempts, f"{path}: {len(reqs)} requests, {attempts} expected")
        ok2xx = [q for q in reqs if q.status and 200 <= q.status < 300]
        ctx.check(len(ok2xx) == (1 if status == "delivered" else 0),
                  f"{path}: {len(ok2xx)} requests answered 2xx")
        ctx.check((r["delivered_at"] is not None) == (status == "delivered"),
                  f"{path}: delivered_at {r['delivered_at']} for a {r['status']} row")
        ctx.check(len({q.body for q in reqs}) <= 1 and len({q.wid for q in reqs}) <= 1,
                  f"{path}: the attempts did not send the same body and webhook-id")
        ctx.check_list(f"{path}: requests", [f"#{q.seq}: {'; '.join(p)}" for q in reqs
                                             for p in [request_problems(q, routes[path])] if p])
        if reqs:
            ev = ev or canon(parse(reqs[0].body))
            ctx.check(canon(parse(reqs[0].body)) == ev, f"{path}: another body than the others")
            ctx.check(reqs[0].wid == event_id(ev), f"{path}: webhook-id {reqs[0].wid!r}")
        g = gaps(reqs)
        lim = [min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** i) / 1000 + SLACK for i in range(len(g))]
        ctx.check(all(x <= m for x, m in zip(g, lim)),
                  f"{path}: retry gaps {[round(x, 3) for x in g]} s over the backoff limits "
                  f"{[round(m - SLACK, 3) for m in lim]} s (+{SLACK} s slack)")
        log(f"{path:10} -> {r['status']:9} attempts {r['attempts']} http {r['last_http_status']} "
            f"gaps {[round(x * 1000) for x in g]} ms"
            + (f"  last_error {short(r['last_error'], 80)!r}" if r["last_error"] else ""))
        ctx.expect[rid] = {"path": path, "events": 1, "delivered": 1 if status == "delivered" else 0,
                           "dead": 1 if status == "dead" else 0, "retried": attempts > 1,
                           "status": code}
    ctx.check(R.count("/c302-target") == 0, "the 302 redirect was followed")
    ctx.timing("codes: one event settled on 13 routes after", f"{secs:.2f} s")
    # backoff visible in next_attempt_at while the always-500 row was pending
    bad = [f"attempts {a}: next_attempt_at - updated_at = {(nx - up).total_seconds():.3f} s"
           for _, a, nx, up, now in samples
           if not -0.01 <= (nx - up).total_seconds() <= RETRY_MAX_MS / 1000 + 0.05]
    ctx.check_list("/c500dead: next_attempt_at while pending", bad)
    if samples:
        log(f"/c500dead sampled {len(samples)} times while pending between attempts: "
            f"attempts {sorted({s[1] for s in samples})}, next_attempt_at - updated_at "
            f"{sorted({round((s[2] - s[3]).total_seconds() * 1000) for s in samples})[:8]} ms")
    else:
        ctx.note("/c500dead: never caught pending between attempts (backoff too short to sample)")


def step_retry_after(ctx, admin):
    db, R = ctx.db, ctx.rcv
    watched_table(db, "ra1_t", "wh_ra1")
    watched_table(db, "ra2_t", "wh_ra2")
    date_sent = {}

    def ra_date(k, r):
        if k == 0:
            target = int(time.time()) + 2
            date_sent["t"] = target
            return 503, [("Retry-After", email.utils.formatdate(target, usegmt=True))], 0
        return 200, [], 0
    R.on("/ra-capped", fail_first(1, 429, [("Retry-After", "3")]))
    R.on("/ra429", fail_first(1, 429, [("Retry-After", "1")]))
    R.on("/ra503date", ra_date)
    ids = ctx.add_routes({"/ra-capped": {"channel": "wh_ra1", "url": R.url("/ra-capped")},
                          "/ra429": {"channel": "wh_ra2", "url": R.url("/ra429")},
                          "/ra503date": {"channel": "wh_ra2", "url": R.url("/ra503date")}})
    # retry_max_ms = 500 caps Retry-After: 3
    db.execute("INSERT INTO ra1_t VALUES (1, 'capped')")
    # while its only work is a retry due ~0.5 s later, the worker idles
    wait_for("the first request to /ra-capped", lambda: (R.count("/ra-capped") > 0, None), 10, 0.005)
    time.sleep(0.03)
    c0, t0 = worker_cpu_seconds(ctx.worker_pid), time.monotonic()
    time.sleep(0.35)
    c1, t1 = worker_cpu_seconds(ctx.worker_pid), time.monotonic()
    if c0 is not None and c1 is not None and R.count("/ra-capped") == 1:
        busy = (c1 - c0) / (t1 - t0)
        ctx.check(busy < 0.3, f"the worker used {busy:.0%} of a CPU for {t1 - t0:.2f} s while its "
                              "only work was a retry due later (a busy loop?)")
        log(f"worker CPU while a retry is due ~0.5 s later: {busy:.0%}")
    else:
        ctx.note("worker CPU not measured (the server is not on this machine, or the retry came "
                 "within 0.4 s)")
    ctx.wait_final(ids["/ra-capped"], 1, 10, "429 + Retry-After: 3, retry_max_ms 500")
    reqs = R.requests("/ra-capped")
    g = gaps(reqs)
    ctx.check(len(reqs) == 2 and 0.45 <= g[0] <= RETRY_MAX_MS / 1000 + SLACK + 0.3,
              f"429 + Retry-After: 3 with retry_max_ms {RETRY_MAX_MS}: {len(reqs)} requests, "
              f"gap {[round(x, 3) for x in g]} s, expected one retry after ~{RETRY_MAX_MS} ms (the cap)")
    log(f"429 + Retry-After: 3, retry_max_ms {RETRY_MAX_MS}: retried after {g[0] * 1000 if g else -1:.0f} ms")

    ctx.set_gucs(admin, {"pg_notifier.retry_max_ms": 5000})
    try:
        db.execute("INSERT INTO ra2_t VALUES (1, 'retry-after')")
        ctx.wait_final(ids["/ra429"], 1, 15, "429 + Retry-After: 1")
        ctx.wait_final(ids["/ra503date"], 1, 15, "503 + Retry-After: <date>")
    finally:
        ctx.set_gucs(admin, {"pg_notifier.retry_max_ms": RETRY_MAX_MS})
    reqs = R.requests("/ra429")
    g = gaps(reqs)
    ctx.check(len(reqs) == 2 and 0.95 <= g[0] <= 1.0 + SLACK + 0.5,
              f"429 + Retry-After: 1: {len(reqs)} requests, gap {[round(x, 3) for x in g]} s, "
              "expected one retry ~1 s later")
    log(f"429 + Retry-After: 1 (retry_max_ms 5000): retried after {g[0] * 1000 if g else -1:.0f} ms")
    reqs = R.requests("/ra503date")
    g = gaps(reqs)
    target = date_sent.get("t")
    ctx.check(len(reqs) == 2 and target is not None and reqs[1].wall >= target - 0.05
              and g[0] <= 2.0 + SLACK + 0.5,
              f"503 + Retry-After: <HTTP date {target}>: {len(reqs)} requests, retry at "
              f"{reqs[-1].wall if reqs else None} (gap {[round(x, 3) for x in g]} s): "
              "expected the retry not before that date, and soon after it")
    if len(reqs) == 2 and target:
        log(f"503 + Retry-After: <HTTP date>: retried {reqs[1].wall - target:+.3f} s from that "
            f"date ({g[0] * 1000:.0f} ms after the 503)")
    for path in ("/ra-capped", "/ra429", "/ra503date"):
        rows = route_rows(db, ids[path])
        ctx.check([(r["status"], r["attempts"], r["last_http_status"]) for r in rows]
                  == [("delivered", 2, 200)],
                  f"{path}: rows {[(r['status'], r['attempts'], r['last_http_status']) for r in rows]}")
        ctx.expect[ids[path]] = {"path": path, "events": 1, "delivered": 1, "dead": 0,
                                 "retried": True, "status": 200}


def step_timeout(ctx, admin):
    db, R = ctx.db, ctx.rcv
    watched_table(db, "hang_t", "wh_hang")
    watched_table(db, "side_t", "wh_side")
    R.on("/hang", hang(2.0))
    R.on("/hang-long", hang(3.0))
    R.on("/side", ok())
    ids = ctx.add_routes({
        "/hang": {"channel": "wh_hang", "url": R.url("/hang"), "timeout_ms": 300, "max_attempts": 2},
        "/hang-long": {"channel": "wh_hang", "url": R.url("/hang-long"), "timeout_ms": 2000,
                       "max_attempts": 1},
        "/side": {"channel": "wh_side", "url": R.url("/side")}})
    t0 = time.monotonic()
    db.execute("INSERT INTO hang_t VALUES (1, 'hang')")
    wait_for("the first request to /hang-long", lambda: (R.count("/hang-long") > 0, None), 10, 0.005)
    time.sleep(0.1)
    t_side = time.monotonic()
    db.execute("INSERT INTO side_t VALUES (1, 'side')")
    wait_for("the event of another route while a request hangs",
             lambda: (R.count("/side") > 0, None), 5, 0.002)
    side = R.requests("/side")[0].t0 - t_side
    hl = R.requests("/hang-long")[0]
    ctx.check(side < 0.5 and R.requests("/side")[0].t0 < hl.t0 + 1.5,
              f"another route's event reached its receiver {side:.3f} s after its commit while a "
              "request hung (the worker must not block on a request)")
    log(f"while a request hung, another route's event arrived {side * 1000:.0f} ms after its commit")
    ctx.wait_final(ids["/hang"], 1, 15, "hanging receiver, timeout_ms 300")
    ctx.wait_final(ids["/hang-long"], 1, 15, "hanging receiver, timeout_ms 2000")
    ctx.wait_final(ids["/side"], 1, 5, "side route")
    secs = time.monotonic() - t0
    reqs = R.requests("/hang")
    g = gaps(reqs)
    rows = route_rows(db, ids["/hang"])
    r = rows[0]
    ctx.check(len(reqs) == 2 and g[0] >= 0.28,
              f"timeout_ms 300: {len(reqs)} requests, gap {[round(x, 3) for x in g]} s "
              "(expected 2, the second >= 0.3 s after the first)")
    ctx.check((r["status"], r["attempts"]) == ("dead", 2),
              f"timeout_ms 300, max_attempts 2: row {r['status']}, attempts {r['attempts']}")
    ctx.check(bool(re.search(r"time[d ]?\s*out|timeout", r["last_error"] or "", re.I)),
              f"timeout: last_error {r['last_error']!r} does not name the timeout")
    if r["last_http_status"] is not None:
        ctx.note(f"timeout: last_http_status {r['last_http_status']} (no answer came)")
    took = (r["updated_at"] - r["received_at"]).total_seconds()
    ctx.check(0.55 <= took <= 0.6 + RETRY_MAX_MS / 1000 + 2 * SLACK,
              f"timeout_ms 300 x 2 attempts: dead {took:.3f} s after received_at")
    log(f"/hang: 2 requests {g[0] * 1000 if g else -1:.0f} ms apart, dead {took:.2f} s after "
        f"receipt, last_error {r['last_error']!r}")
    rl = route_rows(db, ids["/hang-long"])[0]
    took = (rl["updated_at"] - rl["received_at"]).total_seconds()
    ctx.check((rl["status"], rl["attempts"]) == ("dead", 1) and R.count("/hang-long") == 1
              and 1.9 <= took <= 2.0 + 2 * SLACK,
              f"timeout_ms 2000, max_attempts 1: row {rl['status']}, attempts {rl['attempts']}, "
              f"{R.count('/hang-long')} requests, dead {took:.3f} s after received_at")
    ctx.timing("timeout: both hanging routes dead after", f"{secs:.2f} s")
    ctx.expect[ids["/hang"]] = {"path": "/hang", "events": 1, "delivered": 0, "dead": 1,
                                "retried": True, "status": "none"}
    ctx.expect[ids["/hang-long"]] = {"path": "/hang-long", "events": 1, "delivered": 0, "dead": 1,
                                     "retried": False, "status": "none"}
    ctx.expect[ids["/side"]] = {"path": "/side", "events": 1, "delivered": 1, "dead": 0,
                                "retried": False, "status": 200}


def step_refused(ctx, admin):
    db = ctx.db
    port = free_port()       # nothing listens there
    watched_table(db, "ref_t", "wh_refused")
    url = f"http://127.0.0.1:{port}/refused"
    with db.transaction():
        rid = add_webhook(db, channel="wh_refused", url=url, max_attempts=3)
    ctx.wait_channels(["wh_refused"])
    t0 = time.monotonic()
    db.execute("INSERT INTO ref_t VALUES (1, 'nobody listens')")
    ctx.wait_final(rid, 1, 15, "connection refused")
    secs = time.monotonic() - t0
    r = route_rows(db, rid)[0]
    ctx.check((r["status"], r["attempts"]) == ("dead", 3),
              f"connection refused, max_attempts 3: row {r['status']}, attempts {r['attempts']}")
    ctx.check(bool(re.search(r"connect|refused", r["last_error"] or "", re.I)),
              f"connection refused: last_error {r['last_error']!r} does not name the connection")
    ctx.check(r["last_http_status"] in (None, 0),
              f"connection refused: last_http_status {r['last_http_status']}")
    ctx.check(secs <= 3 * RETRY_MAX_MS / 1000 + 3 * SLACK + 1,
              f"connection refused x 3 took {secs:.2f} s")
    log(f"connection refused: dead after 3 attempts in {secs:.2f} s, last_error {r['last_error']!r}")
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            ctx.note(f"port {port} was taken by someone else meanwhile")
    ctx.rid["refused"] = rid
    ctx.expect[rid] = {"path": "refused", "events": 1, "delivered": 0, "dead": 1,
                       "retried": True, "status": "none"}


def step_down(ctx, admin):
    db = ctx.db
    R2 = ctx.rcv2 = Receiver("down").start()
    R2.on("/down", ok(0.002))
    watched_table(db, "down_t", "wh_down")
    route = {"channel": "wh_down", "url": R2.url("/down"), "max_attempts": 100,
             "secret": "down-secret"}
    with db.transaction():
        rid = add_webhook(db, **route)
    ctx.wait_channels(["wh_down"])
    db.execute("INSERT INTO down_t SELECT g, 'warm' FROM generate_series(1, 10) g")
    ctx.wait_final(rid, 10, 10, "10 events before the receiver goes down")
    R2.stop()
    t_down = time.monotonic()
    n_before = len(R2.requests())
    with connect(DB) as c:
        for k in range(4):
            c.execute("INSERT INTO down_t SELECT g, 'while down' FROM generate_series(%s::int, %s::int) g",
                      (11 + k * 50, 60 + k * 50))
    wait_for("200 events in notifier.deliveries",
             lambda: (lambda n: (n >= 210, n))(sum(status_counts(db, rid).values())), 10, 0.05)
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t_down)))
    snap = db.execute("SELECT count(*) FILTER (WHERE status = 'delivered'), "
                      "count(*) FILTER (WHERE status IN ('pending', 'in_flight')), "
                      "count(*) FILTER (WHERE status = 'dead'), max(attempts), "
                      "min(last_error) FROM notifier.deliveries WHERE route_id = %s",
                      (rid,)).fetchone()
    log(f"receiver down for {time.monotonic() - t_down:.1f} s: delivered {snap[0]}, "
        f"pending/in flight {snap[1]}, dead {snap[2]}, max attempts {snap[3]}, "
        f"a last_error: {snap[4]!r}")
    ctx.check(snap[0] == 10 and snap[1] == 200 and snap[2] == 0,
              f"while the receiver was down: {snap[0]} delivered, {snap[1]} open, {snap[2]} dead")
    ctx.check(snap[3] is not None and snap[3] >= 2, f"while down: max attempts {snap[3]} (no retries?)")
    ctx.check(len(R2.requests()) == n_before, "the stopped receiver got requests")
    R2.start()
    t_up = time.monotonic()
    ctx.wait_final(rid, 210, 20, "after the receiver came back")
    secs = time.monotonic() - t_up
    reqs = R2.requests("/down")
    keys = collections.Counter()
    for r in reqs:
        if r.status == 200:
            keys[canon(parse(r.body))["key"]["id"]] += 1
    missing = [k for k in range(1, 211) if keys[Decimal(k)] == 0]
    twice = {int(k): c for k, c in keys.items() if c > 1}
    ctx.check(not missing, f"after the outage: {len(missing)} events never delivered: {missing[:10]}")
    ctx.check(not twice, f"after the outage: events delivered more than once: {twice}")
    ctx.check_list("down: requests", [f"#{r.seq}: {'; '.join(p)}" for r in reqs
                                      for p in [request_problems(r, route)] if p])
    rows = route_rows(db, rid)
    att = collections.Counter(r["attempts"] for r in rows if r["status"] == "delivered")
    ctx.check(all(r["status"] == "delivered" for r in rows),
              f"after the outage: rows {collections.Counter(r['status'] for r in rows)}")
    ctx.timing("down: 200 events produced during a 2.5 s outage, all delivered after the "
               "receiver came back in", f"{secs:.2f} s")
    log(f"attempts of the delivered rows: {sorted(att.items())}; each event exactly once")
    ctx.expect[rid] = {"path": "/down", "events": 210, "delivered": 210, "dead": 0,
                       "retried": True, "status": 200}


def step_redeliver(ctx, admin):
    db, R = ctx.db, ctx.rcv
    E = lambda w, q, p=None, need=(), codes=None: expect_error(ctx, db, w, q, p, need, codes)  # noqa: E731
    # redeliver(id): the 404 row and the always-500 row, after the receiver is fixed
    for path in ("/c404", "/c500dead"):
        rid = ctx.rid[path]
        row = route_rows(db, rid)[0]
        if not ctx.check(row["status"] == "dead", f"{path}: row is {row['status']}, not dead"):
            continue
        n0 = R.count(path)
        R.on(path, ok())
        db.execute("SELECT notifier.redeliver(%s)", (row["id"],))
        ctx.wait_final(rid, 1, 10, f"redeliver({row['id']}) of {path}")
        r = route_rows(db, rid)[0]
        ctx.check((r["status"], r["attempts"], r["last_http_status"]) == ("delivered", 1, 200)
                  and R.count(path) == n0 + 1 and r["delivered_at"] is not None,
                  f"{path} after redeliver: {r['status']}, attempts {r['attempts']}, "
                  f"http {r['last_http_status']}, {R.count(path) - n0} more requests")
        ctx.expect[rid]["delivered"] += 1
        ctx.expect[rid]["status"] = 200
        log(f"redeliver({row['id']}) of the dead {path} row: delivered at attempt 1")
        E(f"redeliver({row['id']}) of a delivered row", "SELECT notifier.redeliver(%s)", (row["id"],),
          need=[[str(row["id"])], ["dead", "delivered"]])
    # redeliver_dead(route): 5 dead rows (404; a 410 would disable the route:
    # test_webhook_disable.py), then fixed
    watched_table(db, "rd_t", "wh_redeliver")
    R.on("/gone", always(404))
    rid = ctx.add_routes({"/gone": {"channel": "wh_redeliver", "url": R.url("/gone")}})["/gone"]
    db.execute("INSERT INTO rd_t SELECT g, 'gone' FROM generate_series(1, 5) g")
    ctx.wait_final(rid, 5, 10, "5 events answered 404")
    s = status_counts(db, rid)
    ctx.check(s == {"dead": 5}, f"5 events answered 404: {s}")
    R.on("/gone", ok())
    n = db.execute("SELECT notifier.redeliver_dead(%s)", (rid,)).fetchone()[0]
    ctx.check(n == 5, f"redeliver_dead of a route with 5 dead rows returned {n}")
    ctx.wait_final(rid, 5, 10, "redeliver_dead")
    s = status_counts(db, rid)
    keys = sorted(canon(parse(r.body))["key"]["id"] for r in R.requests("/gone") if r.status == 200)
    ctx.check(s == {"delivered": 5} and keys == [Decimal(k) for k in range(1, 6)],
              f"after redeliver_dead: rows {s}, delivered keys {keys}")
    n = db.execute("SELECT notifier.redeliver_dead(%s)", (rid,)).fetchone()[0]
    ctx.check(n == 0, f"redeliver_dead of a route without dead rows returned {n}")
    log("redeliver_dead: 5 dead rows (404) -> 5, all delivered after the receiver was fixed; again -> 0")
    ctx.expect[rid] = {"path": "/gone", "events": 5, "delivered": 5, "dead": 5, "retried": False,
                       "status": 200}
    # the hanging route's dead row
    hid = ctx.rid["/hang"]
    R.on("/hang", ok())
    n = db.execute("SELECT notifier.redeliver_dead(%s)", (hid,)).fetchone()[0]
    ctx.check(n == 1, f"redeliver_dead of the hanging route returned {n}, expected 1")
    ctx.wait_final(hid, 1, 10, "redeliver_dead of the hanging route")
    r = route_rows(db, hid)[0]
    ctx.check((r["status"], r["attempts"]) == ("delivered", 1),
              f"hanging route after redeliver_dead: {r['status']}, attempts {r['attempts']}")
    ctx.expect[hid]["delivered"] = 1
    ctx.expect[hid]["status"] = 200
    log("redeliver_dead of the (fixed) hanging route: its dead row delivered")

    # bad calls
    qid = db.execute("SELECT notifier.add_queue('wh_queue_route')").fetchone()[0]
    live = route_rows(db, ctx.rid["/mixed-a"])[0]["id"]
    E("redeliver(NULL)", "SELECT notifier.redeliver(NULL)", need=[["null"]], codes=("22004",))
    E("redeliver(<unknown id>)", "SELECT notifier.redeliver(999999999)", need=[["999999999"]])
    E("redeliver(<delivered row>)", "SELECT notifier.redeliver(%s)", (live,),
      need=[[str(live)], ["dead", "delivered"]])
    E("redeliver_dead(NULL)", "SELECT notifier.redeliver_dead(NULL)", need=[["null"]],
      codes=("22004",))
    E("redeliver_dead(<unknown route>)", "SELECT notifier.redeliver_dead(999999999)",
      need=[["999999999"]])
    E("redeliver_dead(<a queue route>)", "SELECT notifier.redeliver_dead(%s)", (qid,),
      need=[[str(qid)]])
    db.execute("SELECT notifier.remove_route(%s)", (qid,))
    # remove_route also deletes the route's deliveries
    rid_r = ctx.rid["refused"]
    db.execute("SELECT notifier.remove_route(%s)", (rid_r,))
    left = db.execute("SELECT count(*) FROM notifier.deliveries WHERE route_id = %s",
                      (rid_r,)).fetchone()[0]
    ctx.check(left == 0, f"remove_route left {left} deliveries of the route")
    ctx.expect.pop(rid_r, None)
    log("remove_route of the refused route deleted its deliveries")


def ssrf_routes(ctx, channel, urls, allowed=None):
    """One event to a webhook route per URL (and to allowed, a URL that must
    get it); each denied URL's row dead at attempt 1 with "address denied"."""
    db = ctx.db
    table = channel + "_t"
    routes = {u: {"channel": channel, "url": u, "max_attempts": 5} for u in urls}
    if allowed:
        routes[allowed] = {"channel": channel, "url": allowed}
    with db.transaction():
        ids = {u: add_webhook(db, **args) for u, args in routes.items()}
        watched_table(db, table, channel)
    ctx.wait_channels([channel])
    db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'metadata?')").format(ident(table)))
    for u, rid in ids.items():
        ctx.wait_final(rid, 1, 15, f"denied_networks: {u}")
        r = route_rows(db, rid)[0]
        if u == allowed:
            ctx.check(r["status"] == "delivered",
                      f"{u}, not denied: {r['status']}, last_error {r['last_error']!r}")
            continue
        ctx.check((r["status"], r["attempts"]) == ("dead", 1)
                  and "address denied" in (r["last_error"] or ""),
                  f"{u}: {r['status']} at attempt {r['attempts']}, last_error {r['last_error']!r}")
        log(f"{u}: {r['status']}, last_error {r['last_error']!r}")
    return ids


def step_ssrf(ctx, admin):
    db = ctx.db
    R = ctx.rcv
    R.on("/ssrf-ok", ok())
    R.on("/ssrf", ok())
    ctx.known_paths.add("/ssrf-ok")
    shown = db.execute("SHOW pg_notifier.denied_networks").fetchone()[0]
    default = "0.0.0.0/8, 169.254.0.0/16, fe80::/10, 100.100.100.200/32, fd00:ec2::254/128"
    ctx.check(shown == default, f"denied_networks by default: {shown!r}")

    # the default: 0.0.0.0 reaches this machine, where R listens; loopback is allowed
    ids = ssrf_routes(ctx, "wh_ssrf", [f"http://0.0.0.0:{R.port}/ssrf",
                                       f"http://[::ffff:0.0.0.0]:{R.port}/ssrf"],
                      allowed=R.url("/ssrf-ok"))
    ctx.check(R.count("/ssrf-ok") == 1, f"the allowed route sent {R.count('/ssrf-ok')} requests")
    rid = ids[f"http://0.0.0.0:{R.port}/ssrf"]
    st = db.execute("SELECT last_error FROM notifier.stats WHERE route_id = %s", (rid,)).fetchone()
    ctx.check(st is not None and "address denied" in (st[0] or ""),
              f"notifier.stats last_error of a denied route: {st!r}")

    # Spellings of a denied address, and a name.  Not 169.254.169.254 itself:
    # a broken guard must send nothing off this machine.  127.0.0.2, where a
    # receiver listens, is denied instead, and 127.0.0.1 so that localhost
    # (which resolves through /etc/hosts) is.
    R2 = Receiver("ssrf", host="127.0.0.2").start()
    try:
        ctx.set_gucs(admin, {"pg_notifier.denied_networks":
                             default + ", 127.0.0.2/32, 127.0.0.1/32, ::1/128"})
        p = R2.port
        ssrf_routes(ctx, "wh_ssrf2", [
            R2.url("/ssrf"),
            f"http://2130706434:{p}/ssrf",          # decimal
            f"http://0x7f.0.0.2:{p}/ssrf",          # hex
            f"http://0x7f000002:{p}/ssrf",          # one hex number
            f"http://127.2:{p}/ssrf",               # short form
            f"http://[::ffff:127.0.0.2]:{p}/ssrf",  # IPv4-mapped IPv6
            f"http://[::ffff:7f00:2]:{p}/ssrf",
            f"http://localhost:{R.port}/ssrf",      # a name
        ])
        ctx.check(R2.count("/ssrf") == 0, f"the receiver on 127.0.0.2 got {R2.count('/ssrf')} "
                                          "denied requests")
    finally:
        R2.stop()
        ctx.set_gucs(admin, {"pg_notifier.denied_networks":
                             ctx.saved.get("pg_notifier.denied_networks")})
    ctx.check(R.count("/ssrf") == 0, f"the receiver got {R.count('/ssrf')} denied requests")

    for bad in ("169.254.0.0/33", "not-a-network", "10.0.0.0/", "fe80::/129", "1.2.3.4/-1",
                "10.0.0.0/8,,", "169.254.0.0/16 fe80::/10"):
        expect_error(ctx, db, f"denied_networks = {bad!r}",
                     sql.SQL("SET pg_notifier.denied_networks = {}").format(sql.Literal(bad)),
                     need=["denied_networks"], codes=("22023",))
    db.execute(sql.SQL("SET ROLE {}").format(ident(ROLE)))
    try:
        expect_error(ctx, db, "SET denied_networks by a non-superuser",
                     "SET pg_notifier.denied_networks = ''", need=["permission"],
                     codes=("42501",))
    finally:
        db.execute("RESET ROLE")


def step_rotate(ctx, admin):
    db = ctx.db
    R = ctx.rcv
    R.on("/rotate", ok())
    old, new = "rotate-old-secret", "whsec_" + base64.b64encode(b"rotate new key 0123456789").decode()
    watched_table(db, "rotate_t", "wh_rotate")
    ids = ctx.add_routes({"/rotate": {"channel": "wh_rotate", "url": R.url("/rotate"),
                                      "secret": old}})
    rid = ids["/rotate"]

    def send(n, what):
        db.execute("INSERT INTO rotate_t VALUES (%s, %s)", (n, what))
        wait_for(f"{what}: request {n} to /rotate", lambda: (R.count("/rotate") >= n, None), 10)
        return R.requests("/rotate")[n - 1]

    def sigs(r):
        return (r.sig or "").split(" ")

    def sig_of(secret, r):
        return expected_signature(secret, r.wid, r.ts, r.body)

    r = send(1, "before")
    ctx.check(sigs(r) == [sig_of(old, r)], f"before set_secret: signatures {sigs(r)}")
    db.execute("SELECT notifier.set_secret(%s, %s, '3 seconds')", (rid, new))
    until = db.execute("SELECT previous_secret_until FROM notifier.routes WHERE id = %s",
                       (rid,)).fetchone()[0]
    r = send(2, "overlap")
    ok_new, ok_old = sig_of(new, r) in sigs(r), sig_of(old, r) in sigs(r)
    ctx.check(int(r.ts) < until.timestamp(), "the overlap request was sent after the overlap")
    ctx.check(sigs(r) == [sig_of(new, r), sig_of(old, r)],
              f"during the overlap: signatures {r.sig!r}, expected 'v1,<new> v1,<old>' "
              f"(new verifies: {ok_new}, old verifies: {ok_old})")
    log(f"during the overlap: webhook-signature {r.sig!r}: verifies with the new secret "
        f"{ok_new}, with the old one {ok_old}")
    wait_for("the overlap is over",
             lambda: (db.execute("SELECT now() > %s", (until,)).fetchone()[0], None), 10)
    r = send(3, "after")
    ctx.check(sigs(r) == [sig_of(new, r)],
              f"after the overlap: signatures {r.sig!r}, expected only the new one")
    log(f"after the overlap: webhook-signature {r.sig!r}")

    # keep_previous 0: the new secret alone at once
    db.execute("SELECT notifier.set_secret(%s, %s, '0')", (rid, old))
    r = send(4, "zero")
    ctx.check(sigs(r) == [sig_of(old, r)], f"keep_previous 0: signatures {r.sig!r}")

    cols = [c[0] for c in db.execute("SELECT * FROM notifier.route_list LIMIT 0").description]
    ctx.check(not any("previous" in c for c in cols), f"route_list shows {cols}")
    qid = db.execute("SELECT notifier.add_queue('wh_rotate_queue')").fetchone()[0]
    try:
        bad = [
            ("NULL route", (None, new, "1 hour"), [["route"]], ("22004",)),
            ("NULL secret", (rid, None, "1 hour"), [["secret"]], ("22004",)),
            ("NULL keep_previous", (rid, new, None), [["keep_previous"]], ("22004",)),
            ("unknown route", (-1, new, "1 hour"), [["does not exist"]], ("42704",)),
            ("negative interval", (rid, new, "-1 second"), [["negative"]], ("22023",)),
            ("empty secret", (rid, "", "1 hour"), [["secret"]], ("22023",)),
            ("bad whsec_ secret", (rid, "whsec_!!!", "1 hour"), [["base64"]], ("22023",)),
            ("queue route", (qid, new, "1 hour"), [["webhook"]], ("42809",)),
        ]
        for what, args, need, codes in bad:
            expect_error(ctx, db, f"set_secret: {what}",
                         "SELECT notifier.set_secret(%s, %s, %s::interval)", args,
                         need=need, codes=codes)
        db.execute(sql.SQL("SET ROLE {}").format(ident(ROLE)))
        try:
            expect_error(ctx, db, "set_secret by a non-superuser",
                         "SELECT notifier.set_secret(%s, 'x')", (rid,),
                         need=[["permission denied"]], codes=("42501",))
        finally:
            db.execute("RESET ROLE")
        row = db.execute("SELECT secret FROM notifier.routes WHERE id = %s", (rid,)).fetchone()
        ctx.check(row == (old,), "a refused set_secret changed the secret")
    finally:
        db.execute("SELECT notifier.remove_route(%s)", (qid,))
    ctx.expect[rid] = {"path": "/rotate", "events": 4, "delivered": 4, "dead": 0,
                       "retried": False, "status": 200}


def step_pause(ctx, admin):
    db = ctx.db
    R = ctx.rcv
    R.on("/pause", ok())
    R.on("/pause-witness", ok())
    watched_table(db, "pause_t", "wh_pause")
    ids = ctx.add_routes({
        "/pause": {"channel": "wh_pause", "url": R.url("/pause"), "ordered": "route"},
        "/pause-witness": {"channel": "wh_pause", "url": R.url("/pause-witness")}})
    rid, wid = ids["/pause"], ids["/pause-witness"]

    def state():
        return db.execute("SELECT state, pending FROM notifier.stats WHERE route_id = %s",
                          (rid,)).fetchone()

    def insert(first, last):
        with db.transaction():
            for i in range(first, last + 1):
                db.execute("INSERT INTO pause_t VALUES (%s, 'p')", (i,))

    insert(1, 5)
    ctx.wait_final(rid, 5, 15, "before pause_route")
    ctx.check(state()[0] == "active", f"stats state before pause_route: {state()}")
    db.execute("SELECT notifier.pause_route(%s)", (rid,))
    insert(6, 15)
    # the witness route on the same channel gets the 10 events: the worker
    # has taken them in, and sent none of the paused route's
    ctx.wait_final(wid, 15, 15, "the witness route")
    rows = status_counts(db, rid)
    ctx.check(rows == {"delivered": 5, "pending": 10},
              f"paused route: rows {rows}, expected 5 delivered and 10 pending")
    ctx.check(R.count("/pause") == 5, f"paused route: {R.count('/pause')} requests, expected 5")
    ctx.check(state() == ("paused", 10), f"stats of the paused route: {state()}")
    log(f"paused: the witness route got all 15 events, the paused one 5 (rows {rows}), "
        f"stats {state()}")
    db.execute("SELECT notifier.resume_route(%s)", (rid,))
    ctx.wait_final(rid, 15, 15, "after resume_route")
    got = [as_event(r.body)["row"]["id"] for r in R.requests("/pause")]
    ctx.check(got == list(range(1, 16)),
              f"after resume_route: events {got}, expected 1..15 once each, in order")
    ctx.check(status_counts(db, rid) == {"delivered": 15} and state() == ("active", 0),
              f"after resume_route: rows {status_counts(db, rid)}, stats {state()}")
    log(f"resumed: all 15 events delivered once, in order; stats {state()}")

    qid = db.execute("SELECT notifier.add_queue('wh_pause_queue')").fetchone()[0]
    try:
        for fn in ("pause_route", "resume_route"):
            for what, arg, need, codes in (("NULL", None, [["NULL"]], ("22004",)),
                                           ("unknown route", -1, [["does not exist"]], ("42704",)),
                                           ("queue route", qid, [["webhook"]], ("42704",))):
                expect_error(ctx, db, f"{fn}: {what}",
                             sql.SQL("SELECT notifier.{}(%s)").format(sql.Identifier(fn)), (arg,),
                             need=need, codes=codes)
            db.execute(sql.SQL("SET ROLE {}").format(ident(ROLE)))
            try:
                expect_error(ctx, db, f"{fn} by a non-superuser",
                             sql.SQL("SELECT notifier.{}(%s)").format(sql.Identifier(fn)), (rid,),
                             need=[["permission denied"]], codes=("42501",))
            finally:
                db.execute("RESET ROLE")
    finally:
        db.execute("SELECT notifier.remove_route(%s)", (qid,))
    for r, path in ((rid, "/pause"), (wid, "/pause-witness")):
        ctx.expect[r] = {"path": path, "events": 15, "delivered": 15, "dead": 0,
                         "retried": False, "status": 200}


RATE = 40            # [rate]: max_per_second of the route
RATE_EVENTS = 200    # ... and its events: 5 s at that rate


def step_rate(ctx, admin):
    """max_per_second: the requests reach the receiver at that rate, within 10 %,
    measured at the receiver over the whole burst (5 s: long enough that the
    bucket's first tenth of a second does not count)."""
    db, R = ctx.db, ctx.rcv
    R.on("/rate", ok())
    watched_table(db, "rate_t", "wh_rate")
    ids = ctx.add_routes({"/rate": {"channel": "wh_rate", "url": R.url("/rate"),
                                    "max_per_second": RATE}})
    db.execute("INSERT INTO rate_t SELECT g, 'r' FROM generate_series(1, %s) g", (RATE_EVENTS,))
    ctx.wait_final(ids["/rate"], RATE_EVENTS, RATE_EVENTS / RATE * 3 + 10, "max_per_second")
    reqs = R.requests("/rate")
    ctx.check(len(reqs) == RATE_EVENTS,
              f"max_per_second: {len(reqs)} requests, expected {RATE_EVENTS}")
    rate, span, busiest = ctx.check_rate([r.t0 for r in reqs], RATE, "requests at the receiver")
    log(f"max_per_second {RATE}: {len(reqs)} requests in {span:.2f} s = {rate:.1f}/s at the "
        f"receiver; busiest second {busiest}")
    ctx.timing("rate: requests per second at the receiver (max_per_second 40)", f"{rate:.1f}")
    ctx.expect[ids["/rate"]] = {"path": "/rate", "events": RATE_EVENTS, "delivered": RATE_EVENTS,
                                "dead": 0, "retried": False, "status": 200}


class Blackhole:
    """A loopback port that accepts connections and never answers them."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.conns.append(c)

    def close(self):
        self.done.set()
        self.thread.join(2)
        for c in self.conns + [self.sock]:
            c.close()


BLACKHOLE_EVENTS = 500


def step_blackhole(ctx, admin):
    """A route to a receiver that accepts and never answers costs the other
    routes of the worker nothing: on the same channel, the healthy route
    delivers every event while the dead one has all its requests in flight."""
    db, R = ctx.db, ctx.rcv
    hole = Blackhole()
    try:
        R.on("/healthy", ok())
        watched_table(db, "bh_t", "wh_bh")
        ids = ctx.add_routes({
            "/blackhole": {"channel": "wh_bh", "url": f"http://127.0.0.1:{hole.port}/blackhole",
                           "timeout_ms": 120000, "concurrency": 8},
            "/healthy": {"channel": "wh_bh", "url": R.url("/healthy")}})
        bh, ok_id = ids["/blackhole"], ids["/healthy"]
        db.execute("INSERT INTO bh_t SELECT g, 'b' FROM generate_series(1, %s) g",
                   (BLACKHOLE_EVENTS,))
        _, secs = ctx.wait_final(ok_id, BLACKHOLE_EVENTS, 60, "the healthy route beside a blackhole")
        counts = status_counts(db, bh)
        ctx.check(counts.get("in_flight", 0) == 8 and counts.get("delivered", 0) == 0
                  and sum(counts.values()) == BLACKHOLE_EVENTS,
                  f"blackhole route while the healthy one finished: rows {counts} (expected 8 "
                  f"in flight, the other {BLACKHOLE_EVENTS - 8} pending)")
        ctx.check(len(hole.conns) >= 1, "the blackhole accepted no connection")
        log(f"blackhole: the healthy route delivered {BLACKHOLE_EVENTS} events while the other "
            f"had rows {counts} ({len(hole.conns)} connections held open)")
        ctx.timing("blackhole: healthy route's 500 events delivered after", f"{secs:.2f} s")
        db.execute("SELECT notifier.remove_route(%s)", (bh,))
        ctx.expect[ok_id] = {"path": "/healthy", "events": BLACKHOLE_EVENTS,
                             "delivered": BLACKHOLE_EVENTS, "dead": 0, "retried": False,
                             "status": 200}
    finally:
        hole.close()


def step_stats(ctx, admin):
    cur = ctx.db.cursor(row_factory=dict_row)
    rows = {r["route_id"]: r for r in cur.execute("SELECT * FROM notifier.stats").fetchall()}
    for rid, e in sorted(ctx.expect.items()):
        st = rows.get(rid)
        if not ctx.check(st is not None, f"route {rid} ({e['path']}) missing from notifier.stats"):
            continue
        what = f"route {rid} ({e['path']})"
        log(f"{e['path']:14} received {st['received']:>4} written {st['written']:>4} "
            f"pending {st['pending']} in_flight {st['in_flight']} delivered {st['delivered']:>4} "
            f"retried {st['retried']:>3} dead {st['dead']} http {st['last_http_status']} "
            f"p50 {st['latency_p50_ms']} p99 {st['latency_p99_ms']} errors {st['errors']} "
            f"last_error {short(st['last_error'] or '', 60)!r}")
        ctx.check(st["kind"] == "webhook", f"{what}: kind {st['kind']!r}")
        ctx.check(st["received"] == e["events"],
                  f"{what}: received {st['received']}, expected {e['events']}")
        ctx.check((st["pending"], st["in_flight"]) == (0, 0),
                  f"{what}: pending {st['pending']}, in_flight {st['in_flight']}, expected 0, 0")
        want_d = e["delivered"] if isinstance(e["delivered"], tuple) else (e["delivered"],)
        ctx.check(st["delivered"] in want_d,
                  f"{what}: delivered {st['delivered']}, expected {' or '.join(map(str, want_d))}")
        ctx.check(st["dead"] == e["dead"], f"{what}: dead {st['dead']}, expected {e['dead']}")
        ctx.check((st["retried"] > 0) == e["retried"],
                  f"{what}: retried {st['retried']}, expected {'> 0' if e['retried'] else '0'}")
        if e["status"] == "none":
            ctx.check(st["last_http_status"] in (None, 0),
                      f"{what}: last_http_status {st['last_http_status']} (no HTTP answer ever)")
        else:
            ctx.check(st["last_http_status"] == e["status"],
                      f"{what}: last_http_status {st['last_http_status']}, expected {e['status']}")
        if max(want_d) > 0:
            p50, p99 = st["latency_p50_ms"], st["latency_p99_ms"]
            ctx.check(p50 is not None and p99 is not None and 0 <= p50 <= p99,
                      f"{what}: latency p50 {p50}, p99 {p99}")
            if e.get("latency"):
                # every event was received and delivered within that many ms
                ctx.check(p50 is not None and p50 <= e["latency"] + 200,
                          f"{what}: latency p50 {p50} ms, yet all its events were delivered "
                          f"{e['latency']:.0f} ms after the first commit")
        if not e["retried"] and not e["dead"]:
            ctx.check(st["errors"] == 0 and st["last_error"] is None,
                      f"{what}: errors {st['errors']}, last_error {st['last_error']!r} on a route "
                      "that never failed")
    s = ctx.status()
    ctx.check(s["pid"] == ctx.worker_pid,
              f"the worker restarted during the test: pid {ctx.worker_pid} -> {s['pid']}")
    log(f"status(): pid {s['pid']} (same since the start), state {s['state']!r}, "
        f"last_error {s['last_error']!r}")
    stray = sorted({r.path for r in ctx.rcv.requests()} - ctx.known_paths)
    ctx.check(not stray, f"requests to paths no route uses: {stray}")


STEPS = [
    Step("start", "worker of the test database", step_start, needed=True),
    Step("bad", "bad arguments to add_webhook", step_bad),
    Step("role", "non-superuser, masked secrets", step_role),
    Step("mixed", "mixed workload to two routes = what a LISTEN client saw", step_mixed),
    Step("batch", "batch_size 10", step_batch),
    Step("batch-retry", "a batch is one message: retries send the same events under the same id",
         step_batch_retry),
    Step("ordered", "ordered routes under failures", step_ordered),
    Step("ordered-key", "ordered => 'key': per-key order under failures, keys concurrent",
         step_ordered_key),
    Step("codes", "HTTP status codes: retried, dead, delivered", step_codes),
    Step("retry-after", "429 / 503 with Retry-After", step_retry_after),
    Step("timeout", "a receiver that hangs", step_timeout),
    Step("refused", "connection refused", step_refused),
    Step("down", "receiver down for a while, then back", step_down),
    Step("redeliver", "redeliver and redeliver_dead", step_redeliver,
         needs=("mixed", "codes", "timeout", "refused")),
    Step("ssrf", "denied_networks: the address connected to", step_ssrf, needs=("role",)),
    Step("rotate", "set_secret: both signatures during the overlap", step_rotate,
         needs=("role",)),
    Step("pause", "pause_route / resume_route: kept, not sent; then all, in order", step_pause,
         needs=("role",)),
    Step("rate", "max_per_second: the rate at the receiver, within 10 %", step_rate),
    Step("blackhole", "a receiver that never answers holds back no other route", step_blackhole),
    Step("stats", "notifier.stats", step_stats),
]


def setup(ctx):
    admin = ctx.connect("postgres")
    ctx.saved = settings_to_restore(admin, GUCS, DB)
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(ROLE)))
    new_database(admin, DB)
    ctx.db = ctx.connect(DB)
    ctx.db.execute("CREATE EXTENSION pg_notifier")
    ctx.db.execute("SET lock_timeout = '20s'")
    ctx.rcv = Receiver("main").start()
    log(f"database {DB} with the extension; HTTP receiver on 127.0.0.1:{ctx.rcv.port}")
    return (admin,)


def cleanup(ctx):
    errors = []
    for r in (ctx.rcv, getattr(ctx, "rcv2", None)):
        if r is not None:
            try:
                r.stop()
            except Exception as ex:      # noqa: BLE001 -- cleanup goes on
                errors.append(f"[cleanup] stopping a receiver: {ex}")
    return errors + drop_databases(ctx.saved, [DB], [ROLE])


if __name__ == "__main__":
    main(NAME, STEPS, Ctx(), setup=setup, cleanup=cleanup, timeout=TIMEOUT)
