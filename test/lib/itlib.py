"""The harness of the integration tests (test/integration/*.py): the entry
point main() that runs a test's steps (all, or those named on the command
line), checks and the report, the watchdog, strict JSON comparison of events,
connections, error descriptions, polling, a LISTEN client, threads with a
deadline, settings of postgresql.auto.conf.

Import it from test/integration/*.py with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
"""

import collections
import json
import os
import random
import select
import signal
import socket
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


def _unique_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r} in JSON object")
        d[k] = v
    return d


def parse(text, unique_keys=False):
    """Strict JSON -> Python, numbers exact, objects keep their key order;
    raises ValueError when not JSON (unique_keys: also when an object has a
    key twice)."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants,
                      object_pairs_hook=_unique_keys if unique_keys else None)


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


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe_error(ex):
    d = ex.diag
    parts = [f"ERROR {d.sqlstate}: {d.message_primary}"]
    if d.message_detail:
        parts.append(f"DETAIL: {d.message_detail}")
    if d.message_hint:
        parts.append(f"HINT: {d.message_hint}")
    return "  ".join(parts)


def expect_error(ctx, conn, what, query, params=None, need=(), codes=None, name=None):
    """Run query, which must fail with a clear error: not an internal error,
    sqlstate in codes (when given), and each group of words in need must have
    one word in the message (primary + detail + hint, case-insensitive); a
    note when the message does not name name.  Returns the error."""
    try:
        conn.execute(query, params)
    except psycopg.Error as ex:
        d = ex.diag
        text = " ".join(x for x in (d.message_primary, d.message_detail, d.message_hint) if x)
        log(f"{what:46} -> {describe_error(ex)}")
        ctx.check(d.sqlstate and not d.sqlstate.startswith(("XX", "58")),
                  f"{what}: internal error {d.sqlstate}")
        if codes:
            ctx.check(d.sqlstate in codes, f"{what}: SQLSTATE {d.sqlstate}, expected one of {codes}")
        for group in need:
            ctx.check(any(w.lower() in text.lower() for w in group),
                      f"{what}: the message does not say {' / '.join(group)!r}: {text!r}")
        if name and name not in text:
            ctx.note(f"{what}: the message does not name {name!r}: {d.message_primary!r}")
        return ex
    ctx.check(False, f"{what}: no error")
    return None


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


Notification = collections.namedtuple("Notification", "channel payload pid")


class Listener:
    """A plain LISTEN client.  Reads notifications straight from libpq with a
    select() timeout (psycopg 3.1's notifies() has none).  Notifications are
    Notification(channel, payload, sender pid) tuples."""

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
            self.buf.append(Notification(n.relname.decode(), n.extra.decode(), n.be_pid))

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


def settings_to_restore(admin, names, db):
    """auto_conf_settings() of a test that adds its database db to
    pg_notifier.databases: db is taken out of the saved value (a previous run
    that did not clean up left it there: never keep it)."""
    saved = auto_conf_settings(admin, names)
    guc = "pg_notifier.databases"
    if saved.get(guc):
        dbs = [d.strip() for d in saved[guc].split(",") if d.strip() and d.strip() != db]
        saved[guc] = ", ".join(dbs) or None
    return saved


def workers_gone(admin, dbs, timeout=10):
    """Wait until no pg_notifier worker is connected to the databases dbs (which
    left pg_notifier.databases); returns (how many still are, seconds waited)."""
    t0 = time.monotonic()
    while True:
        n = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                          "'pg_notifier worker' AND datname = ANY(%s)", (list(dbs),)).fetchone()[0]
        if n == 0 or time.monotonic() - t0 > timeout:
            return n, time.monotonic() - t0
        time.sleep(0.1)


def new_database(admin, db):
    """db created afresh (dropped first, with whoever is connected)."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(db)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(ident(db)))


def drop_databases(saved, dbs, roles=()):
    """The end of a test that put its databases dbs into pg_notifier.databases:
    the settings saved put back (restore_settings; None: setup never got that
    far), until the workers of dbs are gone (10 s at most), then dbs and
    roles dropped.  Returns the errors."""
    errors = []
    try:
        with connect("postgres") as admin:
            if saved is not None:
                restore_settings(admin, saved)
                # databases removed lose their workers (contract: within ~1 s)
                n, secs = workers_gone(admin, dbs)
                if n:
                    errors.append(f"[cleanup] {n} worker(s) still connected to {', '.join(dbs)} "
                                  "10 s after they left pg_notifier.databases")
                else:
                    log(f"workers gone {secs:.2f} s after pg_notifier.databases was put back")
            for d in dbs:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(d)))
            for r in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(r)))
        log("settings put back (" + ", ".join(f"{k}={v!r}" for k, v in (saved or {}).items())
            + f"), dropped: {', '.join(list(dbs) + list(roles))}")
    except psycopg.Error as ex:
        errors.append(f"[cleanup] {type(ex).__name__}: {ex}")
    return errors


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
    """The end of a test: its notes, then PASS with ctx.results and
    ctx.timings, or FAIL with ctx.errors; returns the exit status."""
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
    print(f"PASS {name} in {seconds:.0f} s: " + "; ".join(ctx.results + ctx.timings), flush=True)
    return 0


class Checks:
    """What a test found: errors (failed checks), notes, results and timings
    (what its PASS line says), each tagged with the step it happened in;
    report() prints them.  Also the connections it opened (connect()), which
    main() closes at the end."""

    def __init__(self):
        self.errors = []
        self.notes = []
        self.results = []
        self.timings = []
        self.step = None
        self.conns = []

    def check(self, cond, msg):
        if not cond:
            self.errors.append(f"[{self.step}] {msg}")
            print(f"   !! {msg}", flush=True)
        return cond

    def note(self, msg):
        self.notes.append(f"[{self.step}] {msg}")
        log(f"note: {msg}")

    def result(self, msg):
        self.results.append(msg)
        log(msg)

    def timing(self, what, value):
        """value: text, or seconds (a float)."""
        if isinstance(value, float):
            value = f"{value:.2f} s"
        self.timings.append(f"{what}: {value}")
        log(f"{what}: {value}")

    def check_rate(self, times, rate, what):
        """A route's max_per_second (rate) seen from the other side: the
        times (seconds) its messages arrived, over a burst long enough that
        the token bucket's first tenth of a second does not count, within
        10 %; no second holds more than that and the tenth of a second of
        burst the bucket allows.  Returns (per second, span, busiest second)."""
        times = sorted(times)
        span = times[-1] - times[0]
        seen = (len(times) - 1) / span if span > 0 else float("inf")
        busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
        self.check(0.9 * rate <= seen <= 1.1 * rate,
                   f"max_per_second {rate}: {len(times)} {what} in {span:.2f} s, "
                   f"{seen:.1f} per second (expected within 10 %)")
        self.check(busiest <= 1.1 * rate + rate * 0.1,
                   f"max_per_second {rate}: {busiest} {what} in the busiest second (a tenth of a "
                   "second of burst allowed)")
        return seen, span, busiest

    def connect(self, dbname, **kw):
        """connect(), closed by main() when the test ends."""
        c = connect(dbname, **kw)
        self.conns.append(c)
        return c

    def close_all(self):
        for c in self.conns:
            try:
                c.close()
            except Exception:       # noqa: BLE001 -- the end of the test goes on
                pass
        self.conns = []

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


class Step(collections.namedtuple("Step", "tag title fn needed needs", defaults=(False, ()))):
    """A step of a test: fn(ctx, *what setup returned), titled title, run by
    the name tag.  needed: the later steps need it, so it runs whenever one
    of them is chosen, and the test stops when it fails; needs: the tags of
    earlier steps whose work this one uses (they run with it)."""


def choose_steps(steps, names):
    """The steps to run for the names given on the command line (all of them
    for none): each name is a step's tag, or the beginning of exactly one
    tag; with each step chosen come the needed steps before it and the steps
    it needs.  Raises ValueError for a name that is no step."""
    if not names:
        return list(steps)
    tags = [st.tag for st in steps]
    want = set()
    for name in names:
        hits = [t for t in tags if t == name] or [t for t in tags if t.startswith(name)]
        if len(hits) != 1:
            raise ValueError(f"{'no' if not hits else 'more than one'} step {name!r}"
                             f"{' (' + ', '.join(hits) + ')' if hits else ''}; "
                             f"the steps: {' '.join(tags)}")
        want.add(hits[0])
    by_tag = {st.tag: st for st in steps}
    todo = list(want)
    while todo:
        st = by_tag[todo.pop()]
        for t in st.needs:
            if t not in want:
                want.add(t)
                todo.append(t)
    last = max(tags.index(t) for t in want)
    return [st for i, st in enumerate(steps) if st.tag in want or (st.needed and i < last)]


def main(name, steps, ctx=None, setup=None, finish=None, cleanup=None, timeout=None,
         keep_going=True, argv=None):
    """The entry point of an integration test: `python3 test_NAME.py [STEP...]`
    runs every step of steps (a list of Step), or only the steps named (and
    what they need, see choose_steps); `--list` lists them.  Exits with
    report()'s status (2 for a bad command line).

    ctx: the test's Checks (default: a new one).  setup(ctx) runs first; what
    it returns (a tuple, or None) is passed to every step after ctx.
    finish(ctx) runs after the steps, unless a step stopped the test.  A step
    that fails stops the test when it is needed, or when keep_going is false.
    Then main() closes the connections of ctx.connect() and runs cleanup(ctx),
    always, which returns a list of errors.  timeout: seconds until the
    watchdog (arm_watchdog) ends the steps; None for a test that has a
    watchdog of its own."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help", "--list", "-l"):
        print(f"usage: {os.path.basename(sys.argv[0])} [STEP...]   (a step: its name or "
              "the beginning of it)\nsteps:")
        for st in steps:
            print(f"  {st.tag:12} {st.title}")
        sys.exit(0)
    try:
        chosen = choose_steps(steps, args)
    except ValueError as ex:
        print(f"FAIL {name}: {ex}", file=sys.stderr, flush=True)
        sys.exit(2)
    if len(chosen) < len(steps):
        log(f"steps: {' '.join(st.tag for st in chosen)} (of {len(steps)})")
    ctx = Checks() if ctx is None else ctx
    if timeout:
        arm_watchdog(name, timeout)
    t_start = time.monotonic()
    stopped = None
    try:
        ctx.step = "setup"
        extra = (setup(ctx) if setup else None) or ()
        for st in chosen:
            if not ctx.run_step(st.tag, st.title, st.fn, ctx, *extra) and (st.needed or not keep_going):
                stopped = st
                break
        if finish and stopped is None:
            ctx.step = "end"
            finish(ctx)
    except (TestFailure, psycopg.Error, Watchdog) as ex:
        ctx.errors.append(f"[{ctx.step}] {type(ex).__name__}: {ex}")
    finally:
        if timeout:
            signal.alarm(60)        # the cleanup's time (after a watchdog: see arm_watchdog)
        try:
            ctx.close_all()
            if cleanup:
                ctx.errors.extend(cleanup(ctx) or [])
        except Watchdog as ex:
            ctx.errors.append(f"[cleanup] {ex}")
        finally:
            if timeout:
                signal.alarm(0)
    if stopped is not None and stopped is not chosen[-1]:
        ctx.errors.append(f"stopped after step [{stopped.tag}] (the later steps need it)")
    sys.exit(report(name, ctx, time.monotonic() - t_start))


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
    drop_databases()."""
    settings = dict(settings or {})
    guc = "pg_notifier.databases"
    saved = settings_to_restore(admin, [guc] + list(settings), dbname)
    new_database(admin, dbname)
    conn = connect(dbname)
    conn.execute("CREATE EXTENSION pg_notifier")
    if before_worker is not None:
        before_worker(conn)
    cur = [d.strip() for d in admin.execute(f"SHOW {guc}").fetchone()[0].split(",") if d.strip()]
    if cur != ["*"]:
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


class WorkerCtx(Checks):
    """The Checks of a run_worker_test() test: its database connection (db),
    the settings to put back (saved), the worker's pid at the start, and a
    receiver to stop at the end (or None)."""

    def __init__(self):
        super().__init__()
        self.db = None
        self.saved = None
        self.worker_pid = None
        self.receiver = None


def run_worker_test(name, steps, ctx, dbname, settings=None, before_worker=None, roles=(),
                    timeout=None):
    """main() of a test of one database's worker: the roles (created fresh),
    worker_db_start() into ctx.db, ctx.saved and ctx.worker_pid, the steps,
    the worker's pid unchanged and no last_error at the end; then
    ctx.receiver stopped if set, and drop_databases()."""
    def setup(ctx):
        admin = ctx.connect("postgres")
        for role in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))
            admin.execute(sql.SQL("CREATE ROLE {}").format(ident(role)))
        ctx.db, ctx.saved, ctx.worker_pid = worker_db_start(admin, dbname, settings, before_worker)
        ctx.conns.append(ctx.db)

    def finish(ctx):
        s = worker_status(ctx.db, dbname)
        ctx.check(s["pid"] == ctx.worker_pid and s["last_error"] is None,
                  f"worker: pid {ctx.worker_pid} -> {s['pid']}, last_error {s['last_error']!r}")

    def cleanup(ctx):
        if getattr(ctx, "receiver", None) is not None:
            ctx.receiver.stop()
        return drop_databases(getattr(ctx, "saved", None), [dbname], roles)

    main(name, steps, ctx, setup=setup, finish=finish, cleanup=cleanup, timeout=timeout)
