"""Helpers shared by the integration tests that run against test/run's
cluster (test_worker.py, test_webhook.py, test_outbox.py): strict JSON
comparison of events, connections, error descriptions, polling, a LISTEN
client, threads with a deadline, settings of postgresql.auto.conf.

Import it from test/integration/*.py with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
"""

import collections
import json
import os
import random
import select
import signal
import string
import sys
import threading
import time
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


class TestFailure(Exception):
    pass


def log(msg):
    print(f"   {msg}", flush=True)


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def parse(text):
    """Strict JSON -> Python, numbers exact; raises ValueError when not JSON."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)


def canon(v):
    """Comparable form: Decimal 12.50 == 12.5, ints == equal Decimals."""
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, Decimal)):
        return Decimal(v).normalize()
    return v


def as_event(payload):
    """What a sink must get for a NOTIFY payload: the JSON value, or the payload
    as a JSON string when it is not JSON."""
    try:
        return canon(parse(payload))
    except ValueError:
        return payload


def short(v, n=200):
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def text_of(n, seed):
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters + string.digits + " ") for _ in range(n))


def connect(dbname, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(dbname=dbname, **kw)


def describe_error(ex):
    d = ex.diag
    parts = [f"ERROR {d.sqlstate}: {d.message_primary}"]
    if d.message_detail:
        parts.append(f"DETAIL: {d.message_detail}")
    if d.message_hint:
        parts.append(f"HINT: {d.message_hint}")
    return "  ".join(parts)


def ident(*names):
    return sql.Identifier(*names)


def wait_for(desc, fn, timeout, interval=0.05):
    """Poll fn() -> (done, detail) until done; returns (detail, seconds taken)."""
    t0 = time.monotonic()
    while True:
        done, detail = fn()
        if done:
            return detail, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TestFailure(f"{desc}: not within {timeout}s; last seen: {short(detail, 400)}")
        time.sleep(interval)


class Listener:
    """A plain LISTEN client.  Reads notifications straight from libpq with a
    select() timeout (psycopg 3.1's notifies() has none).  Notifications are
    (channel, payload, sender pid)."""

    def __init__(self, dbname, channels):
        self.conn = connect(dbname)
        self.pid = self.conn.info.backend_pid
        for ch in channels:
            self.conn.execute(sql.SQL("LISTEN {}").format(ident(ch)))
        self.buf = collections.deque()

    def _poll(self, timeout):
        pg = self.conn.pgconn
        r, _, _ = select.select([pg.socket], [], [], timeout)
        if r:
            pg.consume_input()
        while True:
            n = pg.notifies()
            if n is None:
                break
            self.buf.append((n.relname.decode(), n.extra.decode(), n.be_pid))

    def until(self, stop, timeout, what):
        """Notifications until stop(channel, payload) is true (that one included)."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            while self.buf:
                n = self.buf.popleft()
                out.append(n)
                if stop(n[0], n[1]):
                    return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure(f"LISTEN client: {what} not within {timeout}s "
                                  f"({len(out)} notifications so far)")
            self._poll(min(left, 0.5))

    def collect(self, secs):
        """Whatever arrives within secs."""
        deadline = time.monotonic() + secs
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._poll(min(left, 0.5))
        out = list(self.buf)
        self.buf.clear()
        return out

    def close(self):
        self.conn.close()


class Threads:
    """Run functions in threads; errors are collected, join has a deadline."""

    def __init__(self, what):
        self.what = what
        self.threads = []
        self.errors = []

    def start(self, fn, *args):
        def wrap():
            try:
                fn(*args)
            except BaseException as ex:   # noqa: B902 -- reported by join()
                self.errors.append(f"{self.what}: {fn.__name__}{args!r}: "
                                   f"{type(ex).__name__}: {ex}")
        t = threading.Thread(target=wrap, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            while t.is_alive() and time.monotonic() < deadline:
                t.join(0.2)
        alive = sum(t.is_alive() for t in self.threads)
        if alive:
            raise TestFailure(f"{self.what}: {alive} thread(s) still running after {timeout}s")
        if self.errors:
            raise TestFailure("; ".join(self.errors))


def auto_conf_settings(admin, names):
    """{name: value in postgresql.auto.conf, or None}: what ALTER SYSTEM put
    there (or cluster_start wrote), to put back with restore_settings()."""
    rows = admin.execute("SELECT name, setting FROM pg_file_settings "
                         "WHERE sourcefile LIKE '%%postgresql.auto.conf' AND name = ANY(%s) "
                         "ORDER BY seqno", (list(names),)).fetchall()
    saved = dict.fromkeys(names)
    for name, setting in rows:
        saved[name] = setting
    return saved


def restore_settings(admin, saved):
    """ALTER SYSTEM SET / RESET back to saved (from auto_conf_settings), and reload."""
    for name, value in saved.items():
        if value is None:
            admin.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name)))
        else:
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name),
                                                                    sql.Literal(value)))
    admin.execute("SELECT pg_reload_conf()")


def report(name, ctx, seconds):
    """The end of a test: its notes, then PASS with ctx.timings, or FAIL with
    ctx.errors; returns the exit status."""
    if ctx.notes:
        print("   notes (not failures):")
        for n in ctx.notes:
            print(f"     - {n}")
    if ctx.errors:
        print(f"FAIL {name}: {len(ctx.errors)} problem(s) in {seconds:.0f} s:", file=sys.stderr)
        for m in ctx.errors:
            print(f"  - {m}", file=sys.stderr)
        sys.stderr.flush()
        return 1
    print(f"PASS {name} in {seconds:.0f} s: " + "; ".join(ctx.timings), flush=True)
    return 0


class Checks:
    """What a test found: errors (failed checks), notes, timings, each
    tagged with the step it happened in; report() prints them."""

    def __init__(self):
        self.errors = []
        self.notes = []
        self.timings = []
        self.step = None

    def check(self, cond, msg):
        if not cond:
            self.errors.append(f"[{self.step}] {msg}")
            print(f"   !! {msg}", flush=True)
        return cond

    def note(self, msg):
        self.notes.append(f"[{self.step}] {msg}")
        log(f"note: {msg}")

    def timing(self, what, value):
        self.timings.append(f"{what}: {value}")
        log(f"{what}: {value}")

    def run_step(self, tag, title, fn, *args):
        """Run one step fn(*args): a TestFailure or a psycopg error is a failed
        check of that step.  Returns whether it passed."""
        self.step = tag
        log(f"[{tag}] {title}")
        t0 = time.monotonic()
        ok = True
        try:
            fn(*args)
        except TestFailure as ex:
            ok = self.check(False, str(ex))
        except psycopg.Error as ex:
            ok = self.check(False, f"unexpected {type(ex).__name__}: {ex}")
        log(f"[{tag}] done in {time.monotonic() - t0:.1f} s")
        return ok


class Watchdog(BaseException):
    """Raised in the main thread when a test runs past its time limit."""


def arm_watchdog(name, timeout):
    """After timeout seconds raise Watchdog in the main thread; its cleanup
    then has 30 seconds more before the process exits hard."""
    alarms = []

    def on_alarm(signum, frame):
        alarms.append(signum)
        if len(alarms) == 1:
            signal.alarm(30)
            raise Watchdog(f"watchdog: test not finished after {timeout}s")
        print(f"FAIL {name}: watchdog: cleanup did not finish either; exiting hard",
              file=sys.stderr, flush=True)
        os._exit(2)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout)


WORKER_TYPE = "pg_notifier worker"


def worker_status(conn, dbname):
    """notifier.status() of dbname's worker (a dict), or None."""
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute("SELECT * FROM notifier.status() WHERE database = %s", (dbname,)).fetchall()
    return rows[0] if rows else None


def worker_db_start(admin, dbname, settings=None, before_worker=None):
    """A fresh database dbname with the extension, added to pg_notifier.databases,
    and the settings {guc: value} set with ALTER SYSTEM; before_worker(conn)
    runs before the worker starts.  Returns (conn, saved, pid): saved is for
    worker_db_stop()."""
    settings = dict(settings or {})
    guc = "pg_notifier.databases"
    saved = auto_conf_settings(admin, [guc] + list(settings))
    if saved[guc]:      # a previous run that did not clean up: never keep our database
        dbs = [d.strip() for d in saved[guc].split(",") if d.strip() and d.strip() != dbname]
        saved[guc] = ", ".join(dbs) or None
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(dbname)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(ident(dbname)))
    conn = connect(dbname)
    conn.execute("CREATE EXTENSION pg_notifier")
    if before_worker is not None:
        before_worker(conn)
    cur = [d.strip() for d in admin.execute(f"SHOW {guc}").fetchone()[0].split(",") if d.strip()]
    settings[guc] = ", ".join([d for d in cur if d != dbname] + [dbname])
    for name, value in settings.items():
        admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
    admin.execute("SELECT pg_reload_conf()")
    s, secs = wait_for(f"the worker of {dbname} running",
                       lambda: (lambda s: (s is not None and s["pid"] is not None
                                           and s["state"] in ("listening", "forwarding"), s))(
                           worker_status(conn, dbname)), 30)
    log(f"worker of {dbname}: pid {s['pid']} after {secs:.2f} s; settings {settings}")
    return conn, saved, s["pid"]


def worker_db_stop(dbname, saved):
    """Undo worker_db_start(): the settings put back, the worker gone, the
    database dropped.  Returns a list of errors."""
    errors = []
    try:
        with connect("postgres") as admin:
            if saved is not None:
                restore_settings(admin, saved)
                t0 = time.monotonic()
                while True:
                    n = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = %s "
                                      "AND datname = %s", (WORKER_TYPE, dbname)).fetchone()[0]
                    if n == 0 or time.monotonic() - t0 > 10:
                        break
                    time.sleep(0.1)
                if n:
                    errors.append(f"[cleanup] the worker of {dbname} still runs 10 s after the "
                                  "database left pg_notifier.databases")
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(dbname)))
    except psycopg.Error as ex:
        errors.append(f"[cleanup] {type(ex).__name__}: {ex}")
    return errors


def run_worker_test(name, timeout, ctx, dbname, steps, settings=None, before_worker=None,
                    roles=()):
    """The whole of a test of one database's worker: the watchdog, the roles
    (created fresh, dropped at the end), worker_db_start() into ctx.db and
    ctx.saved, each step (tag, title, fn, *args) as fn(ctx, *args), the
    worker's pid unchanged and no last_error at the end, worker_db_stop();
    ctx.receiver is stopped if set.  Returns report()'s exit status."""
    arm_watchdog(name, timeout)
    t_start = time.monotonic()
    admin = connect("postgres")
    try:
        ctx.step = "setup"
        for role in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))
            admin.execute(sql.SQL("CREATE ROLE {}").format(ident(role)))
        ctx.db, ctx.saved, wpid = worker_db_start(admin, dbname, settings, before_worker)
        for tag, title, fn, *args in steps:
            ctx.run_step(tag, title, fn, ctx, *args)
        ctx.step = "end"
        s = worker_status(ctx.db, dbname)
        ctx.check(s["pid"] == wpid and s["last_error"] is None,
                  f"worker: pid {wpid} -> {s['pid']}, last_error {s['last_error']!r}")
    except (TestFailure, psycopg.Error, Watchdog) as ex:
        ctx.errors.append(f"[{ctx.step}] {type(ex).__name__}: {ex}")
    finally:
        signal.alarm(60)
        if getattr(ctx, "receiver", None) is not None:
            ctx.receiver.stop()
        if getattr(ctx, "db", None) is not None:
            ctx.db.close()
        ctx.errors.extend(worker_db_stop(dbname, getattr(ctx, "saved", None)))
        try:
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))
            admin.close()
        except psycopg.Error as ex:
            ctx.errors.append(f"[cleanup] {type(ex).__name__}: {ex}")
        signal.alarm(0)
    return report(name, ctx, time.monotonic() - t_start)
