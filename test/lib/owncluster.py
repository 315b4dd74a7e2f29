"""A PostgreSQL cluster of a test's own, for the tests that kill server
processes or restart the server (test/run's log check would call their
kill -9 a crash, so they cannot use test/run's cluster).

initdb in a fresh temporary directory as the OS user postgres (via runuser
when run as root), shared_preload_libraries = 'pg_notifier', a free loopback
port; always stopped and removed by cleanup().  Also: the server log parsed
into messages (log_line_prefix = '%m [%p] [%b] '), and poll().  ClusterTest:
the Checks of such a test, and its run() on itlib.main.

Import it from test/integration/*.py with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

from itlib import Checks, TestFailure, free_port, log, main

PG_OS_USER = os.environ.get("PG_OS_USER", "postgres")


def forget_libpq_environment():
    """Never talk to the cluster test/run started: drop PGHOST, PGPORT,
    PGUSER, PGDATABASE, PGDATA, PGOPTIONS, ..."""
    for k in list(os.environ):
        if re.fullmatch(r"PG[A-Z]+", k):
            del os.environ[k]


def pg_bindir():
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    major = os.environ.get("PG_MAJOR", "15")
    fallback = f"/usr/lib/postgresql/{major}/bin"
    cfg = os.environ.get("PG_CONFIG") or os.path.join(fallback, "pg_config")
    try:
        out = subprocess.run([cfg, "--bindir"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
        if os.path.exists(os.path.join(out, "pg_ctl")):
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return fallback


# ---------------------------------------------------------------------------
# the server log, parsed into messages (a primary line plus its DETAIL/HINT...)
# log_line_prefix = '%m [%p] [%b] '
# ---------------------------------------------------------------------------
LINE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] \[([^\]]*)\] "
                     r"([A-Z]+[0-9]?):  (.*)$")
SECONDARY = {"DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION"}


def read_messages(path):
    msgs = []
    try:
        f = open(path, errors="replace")
    except OSError:
        return msgs
    with f:
        for line in f:
            line = line.rstrip("\n")
            m = LINE_RE.match(line)
            if m:
                pid, btype, sev, text = m.groups()
                if sev in SECONDARY and msgs and msgs[-1]["pid"] == int(pid):
                    msgs[-1]["text"] += "\n" + text
                    msgs[-1]["lines"].append(line)
                    continue
                msgs.append({"pid": int(pid), "btype": btype, "sev": sev,
                             "text": text, "lines": [line]})
            elif msgs:
                msgs[-1]["text"] += "\n" + line
                msgs[-1]["lines"].append(line)
            else:
                msgs.append({"pid": None, "btype": "", "sev": "", "text": line,
                             "lines": [line]})
    return msgs


def show_msgs(msgs, limit=20):
    out = []
    for m in msgs[:limit]:
        out.extend("      | " + ln for ln in m["lines"][:4])
    if len(msgs) > limit:
        out.append(f"      | ... and {len(msgs) - limit} more")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# the throw-away cluster
# ---------------------------------------------------------------------------
class Cluster:
    """A cluster in a fresh temporary directory; settings: extra
    postgresql.conf lines; name: the tests' application_name and the
    directory's prefix."""

    def __init__(self, name, settings):
        self.name = name
        self.settings = settings
        self.bin = pg_bindir()
        self.dir = tempfile.mkdtemp(prefix=f"pg_notifier_{name}.")
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "server.log")
        self.cmdout = os.path.join(self.dir, "commands.out")
        self.port = None
        self.conns = {}
        self._lock = threading.RLock()
        self._cleaned = False
        self.root = os.geteuid() == 0
        if self.root:
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        os.chmod(self.dir, 0o700)

    # -- commands as the cluster's OS user ---------------------------------
    def guard(self, timeout):
        """Never leave the cluster behind: on SIGTERM/SIGINT/SIGHUP, or when
        the returned event is not set within timeout seconds (a watchdog:
        the server log tail is printed), remove it and exit."""
        done = threading.Event()

        def watchdog():
            if done.wait(timeout):
                return
            print(f"FAIL {self.name}: watchdog: not finished after {timeout}s",
                  file=sys.stderr, flush=True)
            print(f"---- server log tail\n{self.log_tail()}", file=sys.stderr, flush=True)
            self.cleanup()
            os._exit(2)

        def on_signal(signum, frame):
            print(f"FAIL {self.name}: got signal {signum}, cleaning up", file=sys.stderr,
                  flush=True)
            self.cleanup()
            os._exit(128 + signum)

        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, on_signal)
        threading.Thread(target=watchdog, daemon=True).start()
        return done

    def check_crashes(self, killed):
        """The server log shows no crash but our kill -9 of the pids in killed
        (one 'terminated by signal 9' and one reinitialisation each); logs
        the distinct WARNING/ERROR/FATAL lines of pg_notifier processes."""
        msgs = self.messages()
        problems, sig9, reinit = crash_report(msgs, killed)
        if problems:
            raise TestFailure(f"the server log shows crashes:\n{show_msgs(problems)}")
        if len(sig9) != len(killed):
            raise TestFailure(f"expected {len(killed)} 'terminated by signal 9' "
                              f"message(s) (our kill -9), found {len(sig9)}")
        if reinit != len(killed):
            raise TestFailure(f"the postmaster reinitialised {reinit} time(s); expected "
                              f"{len(killed)} (our kill -9 only)")
        notable = [m for m in msgs if "pg_notifier" in m["btype"]
                   and m["sev"] in ("WARNING", "ERROR", "FATAL")]
        log(f"   no PANIC, no TRAP, no crash; {len(sig9)} 'terminated by signal 9' "
            f"(our kill -9) and {reinit} reinitialisation; "
            f"{len(notable)} WARNING/ERROR/FATAL message(s) from pg_notifier processes")
        seen = set()
        for m in notable:
            first = re.sub(r"\d+", "N", m["text"].splitlines()[0])
            if first not in seen:
                seen.add(first)
                log(f"     [{m['btype']}] {m['sev']}: {m['text'].splitlines()[0]}")

    def run_pg(self, args, timeout=120):
        cmd = (["runuser", "-u", PG_OS_USER, "--"] if self.root else []) + args
        # output to a file, never a pipe: the postmaster pg_ctl starts must not
        # hold a pipe of ours open
        with open(self.cmdout, "w+") as out:
            try:
                rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = 124
            out.seek(0)
            return rc, out.read()

    def pg_ctl(self, *args, timeout=90):
        return self.run_pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data,
                            "-l", self.logfile, "-w", "-t", "60", *args], timeout=timeout)

    def initdb(self):
        rc, out = self.run_pg([os.path.join(self.bin, "initdb"), "-D", self.data,
                               "-A", "trust", "-U", "postgres", "--no-sync",
                               "-E", "UTF8", "--locale=C.UTF-8"])
        if rc != 0:
            raise TestFailure(f"initdb failed (exit {rc}):\n{out}")
        self.port = free_port()
        # like cluster_start in test/lib/cluster.sh, but without
        # synchronous_commit = off: an asynchronous commit may be lost by a
        # crash-restart, and these tests check what survives one.
        conf = f"""# Do not edit this file manually!
# It will be overwritten by the ALTER SYSTEM command.
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.dir}'
shared_preload_libraries = 'pg_notifier'
fsync = off
full_page_writes = off
max_connections = 50
log_min_messages = warning
log_line_prefix = '%m [%p] [%b] '
{self.settings}
"""
        path = os.path.join(self.data, "postgresql.auto.conf")
        with open(path, "w") as f:
            f.write(conf)
        if self.root:
            os.chown(path, self.uid, self.gid)

    def start(self):
        rc, out = self.pg_ctl("start")
        if rc != 0:
            raise TestFailure(f"pg_ctl start failed (exit {rc}):\n{out}\n"
                              f"---- server log tail\n{self.log_tail()}")

    def stop(self, mode="fast"):
        """pg_ctl stop -m mode; returns the seconds it took."""
        self.drop_all()
        t0 = time.monotonic()
        rc, out = self.pg_ctl("-m", mode, "stop")
        took = time.monotonic() - t0
        if rc != 0:
            raise TestFailure(f"pg_ctl stop -m {mode} failed (exit {rc}) after {took:.1f}s:\n{out}")
        return took

    def restart(self, mode="fast"):
        self.drop_all()
        t0 = time.monotonic()
        rc, out = self.pg_ctl("-m", mode, "restart")
        took = time.monotonic() - t0
        if rc != 0:
            raise TestFailure(f"pg_ctl restart -m {mode} failed (exit {rc}):\n{out}\n"
                              f"---- server log tail\n{self.log_tail()}")
        return took

    def log_tail(self, n=40):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as ex:
            return f"(no server log: {ex})"

    def messages(self):
        return read_messages(self.logfile)

    # -- SQL ------------------------------------------------------------------
    def connect(self, db):
        return psycopg.connect(host=self.dir, port=self.port, user="postgres", dbname=db,
                               autocommit=True, connect_timeout=5, application_name=self.name,
                               options="-c statement_timeout=60000")

    def q(self, db, query, params=None):
        c = self.conns.get(db)
        if c is None or c.closed or c.broken:
            c = self.conns[db] = self.connect(db)
        try:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            self.drop(db)
            raise

    def one(self, db, query, params=None):
        return self.q(db, query, params)[0][0]

    def drop(self, db):
        c = self.conns.pop(db, None)
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def drop_all(self):
        for db in list(self.conns):
            self.drop(db)

    # -- always: stop and remove ----------------------------------------------
    def cleanup(self):
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
            try:
                self.drop_all()
            except Exception:
                pass
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                rc, out = self.run_pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data,
                                       "-m", "fast", "-w", "-t", "30", "stop"], timeout=45)
                if rc != 0 and os.path.exists(os.path.join(self.data, "postmaster.pid")):
                    print(f"   cleanup: fast stop failed (exit {rc}), stopping immediate",
                          flush=True)
                    self.run_pg([os.path.join(self.bin, "pg_ctl"), "-D", self.data,
                                 "-m", "immediate", "-w", "-t", "30", "stop"], timeout=45)
            if os.environ.get("KEEP_TEST_DIR"):
                print(f"   kept {self.dir} (KEEP_TEST_DIR is set)", flush=True)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def poll(what, timeout, fn, interval=0.1):
    """Call fn() -> (ok, seen) until ok; returns (seconds, seen).  A dropped
    connection (server restarting) counts as 'not yet'."""
    t0 = time.monotonic()
    seen = None
    while True:
        try:
            ok, seen = fn()
            if ok:
                return time.monotonic() - t0, seen
        except psycopg.OperationalError as ex:
            seen = f"(no connection: {(str(ex).strip().splitlines() or [type(ex).__name__])[0]})"
        if time.monotonic() - t0 > timeout:
            raise TestFailure(f"{what}: still not the case after {timeout}s; last seen: {seen}")
        time.sleep(interval)


def crash_report(msgs, killed):
    """What the server log messages msgs say about crashes, when the test
    itself killed the processes in killed with kill -9: (problems: PANIC,
    TRAP, a process terminated by a signal other than our kill -9 or by an
    exception, an unexpected exit code; sig9: the 'terminated by signal 9'
    messages of our kills; reinit: how many times the postmaster
    reinitialised)."""
    problems, sig9, reinit = [], [], 0
    for m in msgs:
        t = m["text"]
        if m["sev"] == "PANIC" or "TRAP:" in t:
            problems.append(m)
        for pid, sig in re.findall(r"\(PID (\d+)\) was terminated by signal (\d+)", t):
            (sig9 if sig == "9" and int(pid) in killed else problems).append(m)
        if "was terminated by exception" in t:
            problems.append(m)
        for code in re.findall(r"\) exited with exit code (\d+)", t):
            if code not in ("0", "1") or t.startswith("server process"):
                problems.append(m)
        if "all server processes terminated; reinitializing" in t:
            reinit += 1
    return problems, sig9, reinit


class ClusterTest(Checks):
    """The Checks of a test on a cluster of its own: self.cl (a Cluster with
    the postgresql.conf lines settings, from start() on), self.rcv (a
    receiver, or None), self.killed (the pids the test killed with kill -9)."""

    def __init__(self, name, settings, timeout, rcv=None):
        super().__init__()
        self.name = name
        self.settings = settings
        self.timeout = timeout
        self.cl = None
        self.rcv = rcv
        self.killed = []
        self.done = None

    def start(self):
        """The cluster, its watchdog (Cluster.guard), initdb, the server, the receiver."""
        self.cl = Cluster(self.name, self.settings)
        self.done = self.cl.guard(self.timeout)
        log(f"server binaries: {self.cl.bin}; cluster in {self.cl.dir}")
        self.cl.initdb()
        self.cl.start()
        if self.rcv is not None:
            self.rcv.start()

    def setup(self):
        """What the steps need once the cluster runs (a subclass's)."""

    def finish(self):
        """After the steps: the server log shows no crash but our kill -9s."""
        log("server log: crashes")
        self.cl.check_crashes(self.killed)
        self.cl.drop_all()

    def stop(self):
        if self.cl is None:
            return []
        self.done.set()
        if self.errors:
            print(f"---- server log tail ({self.cl.logfile})\n{self.cl.log_tail()}----",
                  file=sys.stderr, flush=True)
        if self.rcv is not None:
            try:
                self.rcv.stop()
            except Exception:       # noqa: BLE001 -- the cluster goes anyway
                pass
        self.cl.cleanup()
        return []

    def run(self, steps):
        """itlib.main() of the test: it stops at the first step that fails."""
        forget_libpq_environment()

        def setup(ctx):
            self.start()
            self.setup()
        main(self.name, steps, self, setup=setup, finish=lambda ctx: self.finish(),
             cleanup=lambda ctx: self.stop(), keep_going=False)


def run_main(name, main):
    """sys.exit(main()); a TestFailure or a database error is one FAIL line
    and exit status 1."""
    try:
        sys.exit(main())
    except TestFailure as ex:
        print(f"FAIL {name}: {ex}", file=sys.stderr)
    except psycopg.Error as ex:
        print(f"FAIL {name}: database error: {type(ex).__name__}: {ex}", file=sys.stderr)
    sys.exit(1)
