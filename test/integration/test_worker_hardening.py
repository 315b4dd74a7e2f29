#!/usr/bin/python3
"""Worker security and lifecycle (issue 13), on a cluster of its own.

It changes server-wide settings (ALTER SYSTEM default_transaction_read_only)
and drops and creates the extension many times, so it runs initdb in a fresh
temporary directory (test/lib/owncluster.py) and always removes it.

What it checks (every wait is a poll with a deadline):

  [operator]  a non-superuser role that owns the database creates
              public.*(bigint, interval) -- the operator the worker's retry
              bookkeeping resolved to with the default search_path -- and
              other bait operators (public.||(text, text),
              public.=(bigint, bigint)) whose functions record that they ran
              and try ALTER ROLE ... SUPERUSER; it runs ANALYZE
              notifier.deliveries and makes a webhook route fail (500).  After
              the worker recorded several failed attempts, the role is no
              superuser and no bait ran.
  [guc]       the owner of a custom queue table puts a trigger on it that
              calls set_config('search_path', 'evil, pg_catalog', false); evil
              has a bait ||(text, text).  Events are written to that queue,
              then a route is added (the worker loads the routes again, with
              webhook headers: key || ': ' || value) and more events are
              forwarded: no bait ran, the role is no superuser, every write
              began with search_path = pg_catalog, pg_temp (the trigger records
              it), the worker kept its pid and every event is in the queue.
  [control]   NOTIFY pg_notifier_control with a payload of garbage, from a role
              without privileges: the worker keeps its pid and keeps
              forwarding (it only loads the routes again).
  [latin1]    a queue table whose trigger raises a message of 300 'e-acute'
              (600 bytes): notifier.stats.last_error holds it clipped at a
              character boundary, and a LATIN1 client reads notifier.stats.
  [retry]     a receiver answering 429 with Retry-After: 99999999999999999999
              once: the retry comes after pg_notifier.retry_max_ms (3 s here),
              not at once (an overflow ignored the header) and not never.
  [readonly]  ALTER SYSTEM SET default_transaction_read_only = on + reload: the
              worker keeps its pid and forwards queue and webhook events.
  [extension] 8 cycles of DROP EXTENSION CASCADE; CREATE EXTENSION; watch +
              add_queue + a failing webhook route (so that the worker is busy
              retrying when the next DROP comes); writes at once: the worker
              keeps its pid, each
              cycle's events (outbox delivery) arrive, and neither status()
              nor the server log shows a "does not exist" error.
  Finally the server log: no crash, and no pg_notifier worker restarted.

A failed step is reported and the next ones run.  Run it as root with
Debian's python3 (psycopg 3.1):
    /usr/bin/python3 test/integration/test_worker_hardening.py
Environment: PG_BIN or PG_CONFIG (the server binaries), PG_OS_USER
(postgres), PG_NOTIFIER_TEST_TIMEOUT (watchdog, 280 s), KEEP_TEST_DIR,
PG_NOTIFIER_HARDENING_STEPS (only these steps, e.g. "operator,retry").
"""

import http.server
import json
import os
import sys
import threading
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from owncluster import (Cluster, TestFailure, forget_libpq_environment, log, poll,  # noqa: E402
                        run_main)

NAME = "test_worker_hardening"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "280"))
DB = "hard_db"
DB_EXT = "hard_ext"
OWNER = "hard_owner"
RETRY_MAX_MS = 3000
CYCLES = 8


# ------------------------------------------------------------------ receiver
class Receiver:
    """Answers by path: /fail -> 500; /ra -> 429 with a huge Retry-After the
    first time, then 200; anything else -> 200.  Records (path, time)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reqs = []
        rcv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                path = self.path
                with rcv.lock:
                    seen = sum(1 for p, _ in rcv.reqs if p == path)
                    rcv.reqs.append((path, time.monotonic()))
                if path == "/fail":
                    status, extra = 500, {}
                elif path == "/ra" and seen == 0:
                    status, extra = 429, {"Retry-After": "99999999999999999999"}
                else:
                    status, extra = 200, {}
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass        # the worker cancels requests when the extension goes

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def times(self, path):
        with self.lock:
            return [t for p, t in self.reqs if p == path]

    def stop(self):
        self.server.shutdown()


# ------------------------------------------------------------------ the test
class Test:
    def __init__(self, cl):
        self.cl = cl
        self.rcv = Receiver()

    def conn(self, db, user="postgres"):
        # applications turn default_transaction_read_only off per session
        return psycopg.connect(host=self.cl.dir, port=self.cl.port, user=user, dbname=db,
                               autocommit=True, connect_timeout=5,
                               options="-c default_transaction_read_only=off "
                                       "-c lock_timeout=0 -c statement_timeout=60000")

    def q(self, db, sql, params=None, user="postgres"):
        with self.conn(db, user) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def one(self, db, sql, params=None, user="postgres"):
        return self.q(db, sql, params, user)[0][0]

    def worker_pid(self, db):
        def fn():
            rows = self.q(db, "SELECT pid, state FROM notifier.status() "
                              "WHERE database = current_database()")
            return bool(rows) and rows[0][0] is not None and rows[0][1] == "listening", rows
        _, rows = poll(f"the worker of {db} listening", 30, fn)
        return rows[0][0]

    def wait_listened(self, channel):
        poll(f"channel {channel} listened", 30, lambda: (
            channel in (self.one(DB, "SELECT channels FROM notifier.status() "
                                     "WHERE database = current_database()") or []), None))

    def queue_with_trigger(self, table, body, level="ROW"):
        """A queue table of the owner's, with a BEFORE INSERT trigger running body."""
        self.q(DB, f"""
            CREATE TABLE public.{table} (id bigserial PRIMARY KEY, channel text NOT NULL,
                                         payload jsonb NOT NULL);
            CREATE FUNCTION public.{table}_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {body}
            END $$;
            CREATE TRIGGER {table}_trigger BEFORE INSERT ON public.{table}
                FOR EACH {level} EXECUTE FUNCTION public.{table}_trigger();
            """, user=OWNER)

    def bait_state(self):
        ran = self.q(DB, "SELECT who, what FROM public.bait_log ORDER BY 1, 2")
        superuser = self.one(DB, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (OWNER,))
        return ran, superuser

    def check_no_bait(self, step):
        ran, superuser = self.bait_state()
        if superuser:
            raise TestFailure(f"{step}: role {OWNER} became superuser through the worker "
                              f"(bait log: {ran})")
        if ran:
            raise TestFailure(f"{step}: bait code ran inside the worker: {ran}")
        log(f"   {OWNER} is no superuser, no bait ran")

    def queue_count(self, db, table, channel):
        return self.one(db, f"SELECT count(*) FROM {table} WHERE channel = %s", (channel,))

    # -- setup ----------------------------------------------------------------
    def setup(self):
        cl = self.cl
        cl.q("postgres", f"CREATE ROLE {OWNER} LOGIN")
        cl.q("postgres", f"CREATE DATABASE {DB} OWNER {OWNER}")
        cl.q("postgres", f"CREATE DATABASE {DB_EXT}")
        self.q(DB, "CREATE EXTENSION pg_notifier")
        self.pid = self.worker_pid(DB)
        # the owner's bait: every function records that it ran and tries to
        # make its owner superuser (it succeeds only when a superuser calls it)
        self.q(DB, f"""
            CREATE TABLE public.bait_log (who text, what text);
            GRANT INSERT ON public.bait_log TO PUBLIC;
            CREATE FUNCTION public.bait(what text) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO public.bait_log VALUES (current_user, what);
                BEGIN
                    EXECUTE 'ALTER ROLE {OWNER} SUPERUSER';
                EXCEPTION WHEN insufficient_privilege THEN NULL;
                END;
            END $$;
            CREATE FUNCTION public.bait_mul(bigint, interval) RETURNS interval
                LANGUAGE plpgsql AS $$
            BEGIN PERFORM public.bait('bigint * interval');
                  RETURN $2 OPERATOR(pg_catalog.*) $1::float8; END $$;
            CREATE OPERATOR public.* (LEFTARG = bigint, RIGHTARG = interval,
                                      FUNCTION = public.bait_mul);
            CREATE FUNCTION public.bait_cat(text, text) RETURNS text LANGUAGE plpgsql AS $$
            BEGIN PERFORM public.bait('text || text');
                  RETURN pg_catalog.textcat($1, $2); END $$;
            CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text,
                                       FUNCTION = public.bait_cat);
            CREATE FUNCTION public.bait_eq(bigint, bigint) RETURNS boolean
                LANGUAGE plpgsql AS $$
            BEGIN PERFORM public.bait('bigint = bigint');
                  RETURN pg_catalog.int8eq($1, $2); END $$;
            CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint,
                                      FUNCTION = public.bait_eq);
            CREATE SCHEMA evil;
            CREATE FUNCTION evil.bait_cat(text, text) RETURNS text LANGUAGE plpgsql AS $$
            BEGIN PERFORM public.bait('evil.||');
                  RETURN pg_catalog.textcat($1, $2); END $$;
            CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text,
                                     FUNCTION = evil.bait_cat);
            """, user=OWNER)
        # the bait resolves under the search_path the worker had before
        with self.conn(DB, OWNER) as c:
            c.execute("SET search_path = \"$user\", public")
            c.execute("SELECT 2::bigint * interval '1 millisecond'")
            ran = c.execute("SELECT count(*) FROM public.bait_log").fetchone()[0]
            c.execute("TRUNCATE public.bait_log")
        if ran != 1:
            raise TestFailure("the bait operator does not resolve under the default search_path")
        log("   bigint * interval resolves to the owner's public.* under the default "
            "search_path (the worker's before the fix)")

    # -- [operator] ---------------------------------------------------------
    def step_operator(self):
        self.q(DB, "CREATE TABLE public.wh_t (id int PRIMARY KEY, v text)")
        self.q(DB, "SELECT notifier.watch('public.wh_t', channel => 'wh')")
        self.q(DB, "SELECT notifier.add_webhook('wh', %s, headers => '{\"X-Test\": \"a\"}', "
                   "max_attempts => 100)", (self.rcv.url("/fail"),))
        self.q(DB, "ANALYZE notifier.deliveries", user=OWNER)
        self.q(DB, "INSERT INTO public.wh_t VALUES (1, 'x')")
        poll("three failed attempts recorded", 60,
             lambda: (self.one(DB, "SELECT coalesce(max(attempts), 0) FROM notifier.deliveries"
                                   " WHERE status = 'pending'") >= 3, None))
        log(f"   the receiver answered 500 {len(self.rcv.times('/fail'))} times; "
            "the worker recorded each")
        self.check_no_bait("[operator]")

    # -- [guc] ----------------------------------------------------------------
    def step_guc(self):
        # each write records the search_path it began with, then sets its
        # own for the rest of the session
        self.q(DB, "CREATE TABLE public.sp_log (sp text); GRANT INSERT ON public.sp_log TO PUBLIC",
               user=OWNER)
        self.queue_with_trigger(
            "q_guc",
            "INSERT INTO public.sp_log VALUES (pg_catalog.current_setting('search_path')); "
            "PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog', false); "
            "RETURN NULL;", level="STATEMENT")
        self.q(DB, "SELECT notifier.add_queue('guc', 'public.q_guc')")
        self.wait_listened("guc")
        self.q(DB, "SELECT pg_notify('guc', '{\"n\": ' || i || '}') FROM generate_series(1, 5) i")
        poll("5 events in q_guc", 30, lambda: (self.queue_count(DB, "public.q_guc", "guc") == 5,
                                               None))
        # the routes are loaded again (webhook headers: key || ': ' || value)
        self.q(DB, "SELECT notifier.add_webhook('wh2', %s, headers => '{\"X-B\": \"b\"}')",
               (self.rcv.url("/ok"),))
        self.wait_listened("wh2")
        self.q(DB, "SELECT pg_notify('guc', '{\"n\": ' || i || '}') FROM generate_series(6, 10) i")
        poll("10 events in q_guc", 30, lambda: (self.queue_count(DB, "public.q_guc", "guc") == 10,
                                                None))
        self.check_no_bait("[guc]")
        paths = self.q(DB, "SELECT sp, count(*) FROM public.sp_log GROUP BY 1")
        if len(paths) != 1 or paths[0][0] != "pg_catalog, pg_temp" or paths[0][1] < 2:
            raise TestFailure(f"[guc]: the queue writes ran with these search_paths: {paths} "
                              "(a trigger's set_config outlived its write)")
        if self.worker_pid(DB) != self.pid:
            raise TestFailure("[guc]: the worker restarted")
        log("   10 events in the queue, the worker kept its pid")

    # -- [control] ------------------------------------------------------------
    def step_control(self):
        self.q(DB, "CREATE ROLE hard_nobody LOGIN")
        self.q(DB, "SELECT pg_notify('pg_notifier_control', repeat('x', 7000))", user="hard_nobody")
        self.q(DB, "NOTIFY pg_notifier_control, '{\"ref\":1,\"truncated\":true}'",
               user="hard_nobody")
        self.q(DB, "SELECT pg_notify('guc', '{\"n\": 11}')")
        poll("11 events in q_guc", 30, lambda: (self.queue_count(DB, "public.q_guc", "guc") == 11,
                                                None))
        if self.worker_pid(DB) != self.pid:
            raise TestFailure("[control]: the worker restarted")
        log("   hand-made NOTIFYs on the control channel: the worker kept its pid and forwards")

    # -- [latin1] -------------------------------------------------------------
    def step_latin1(self):
        self.queue_with_trigger("q_err", "RAISE EXCEPTION '%', repeat('é', 300);")
        rid = self.one(DB, "SELECT notifier.add_queue('err', 'public.q_err')")
        self.wait_listened("err")
        self.q(DB, "SELECT pg_notify('err', '{}')")
        poll("the error in stats", 30, lambda: (
            self.one(DB, "SELECT last_error IS NOT NULL FROM notifier.stats WHERE route_id = %s",
                     (rid,)), None))
        with self.conn(DB) as c:
            c.execute("SET client_encoding = 'LATIN1'")
            try:
                rows = c.execute("SELECT * FROM notifier.stats").fetchall()
                err = c.execute("SELECT last_error FROM notifier.stats WHERE route_id = %s",
                                (rid,)).fetchone()[0]
            except (psycopg.Error, UnicodeDecodeError) as ex:
                raise TestFailure(f"[latin1]: a LATIN1 client cannot read notifier.stats: {ex}")
        nbytes = len(err.encode("utf-8"))
        if set(err) != {"é"} or nbytes > 255:
            raise TestFailure(f"[latin1]: last_error is {err!r} ({nbytes} bytes)")
        log(f"   a LATIN1 client reads {len(rows)} rows of notifier.stats; last_error is "
            f"{len(err)} characters ({nbytes} bytes)")

    # -- [retry] --------------------------------------------------------------
    def step_retry(self):
        self.q(DB, "SELECT notifier.add_webhook('ra', %s)", (self.rcv.url("/ra"),))
        self.wait_listened("ra")
        self.q(DB, "SELECT pg_notify('ra', '{\"n\": 1}')")
        poll("the retry after Retry-After", 30, lambda: (len(self.rcv.times("/ra")) >= 2, None))
        t = self.rcv.times("/ra")
        gap = t[1] - t[0]
        if gap < (RETRY_MAX_MS - 100) / 1000:
            raise TestFailure(f"[retry]: Retry-After: 99999999999999999999 was not honoured: "
                              f"the retry came {gap:.3f}s after the 429 "
                              f"(pg_notifier.retry_max_ms = {RETRY_MAX_MS})")
        poll("delivered", 30, lambda: (
            self.one(DB, "SELECT count(*) FROM notifier.deliveries d JOIN notifier.routes r"
                         " ON r.id = d.route_id WHERE r.channel = 'ra'"
                         " AND d.status = 'delivered'") == 1, None))
        log(f"   the retry came {gap:.2f}s after the 429 (retry_max_ms {RETRY_MAX_MS} ms), "
            "then delivered")

    # -- [readonly] -----------------------------------------------------------
    def step_readonly(self):
        self.q("postgres", "ALTER SYSTEM SET default_transaction_read_only = on")
        self.q("postgres", "SELECT pg_reload_conf()")

        def read_only_now():
            self.cl.drop("postgres")        # a new session sees the reloaded default
            return self.cl.one("postgres", "SHOW default_transaction_read_only") == "on", None
        poll("the reload seen by new sessions", 30, read_only_now)
        before = self.queue_count(DB, "public.q_guc", "guc")
        ok_before = len(self.rcv.times("/ok"))
        self.q(DB, "SELECT pg_notify('guc', '{\"n\": ' || i || '}') FROM generate_series(1, 5) i")
        self.q(DB, "SELECT pg_notify('wh2', '{\"n\": ' || i || '}') FROM generate_series(1, 3) i")
        poll("5 more events in q_guc", 30, lambda: (
            self.queue_count(DB, "public.q_guc", "guc") == before + 5, None))
        poll("3 more webhook requests", 30, lambda: (
            len(self.rcv.times("/ok")) >= ok_before + 1 and
            self.one(DB, "SELECT count(*) FROM notifier.deliveries d JOIN notifier.routes r"
                         " ON r.id = d.route_id WHERE r.channel = 'wh2'"
                         " AND d.status = 'delivered'") == 3, None))
        if self.worker_pid(DB) != self.pid:
            raise TestFailure("[readonly]: the worker restarted")
        self.q("postgres", "ALTER SYSTEM RESET default_transaction_read_only")
        self.q("postgres", "SELECT pg_reload_conf()")
        log("   with default_transaction_read_only = on server-wide the worker forwards "
            "to the queue and the webhook, same pid")

    # -- [extension] ----------------------------------------------------------
    def step_extension(self):
        self.q(DB_EXT, "CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        self.q(DB_EXT, "CREATE EXTENSION pg_notifier")
        pid = self.worker_pid(DB_EXT)
        n = 0
        for cycle in range(CYCLES):
            with self.conn(DB_EXT) as c:
                c.execute("DROP EXTENSION pg_notifier CASCADE")
                c.execute("CREATE EXTENSION pg_notifier")
                c.execute("SELECT notifier.watch('public.t', channel => 'r', delivery => 'outbox')")
                c.execute("SELECT notifier.add_queue('r')")
                # a failing webhook: the worker claims its retries every few
                # ms, so the next DROP meets it working on its tables
                c.execute("SELECT notifier.add_webhook('r', %s, max_attempts => 100)",
                          (self.rcv.url("/fail"),))
                for i in range(5):
                    n += 1
                    c.execute("INSERT INTO public.t VALUES (%s, %s)", (n, f"cycle {cycle}"))
            poll(f"cycle {cycle}: its 5 events in notifier.queue", 30, lambda: (
                self.queue_count(DB_EXT, "notifier.queue", "r") == 5, None))
            now = self.worker_pid(DB_EXT)
            if now != pid:
                raise TestFailure(f"[extension] cycle {cycle}: the worker restarted "
                                  f"(pid {pid} -> {now})")
        err = self.one(DB_EXT, "SELECT last_error FROM notifier.status() "
                               "WHERE database = current_database()")
        if err is not None:
            raise TestFailure(f"[extension]: the worker has an error: {err}")
        bad = [m for m in self.cl.messages() if "does not exist" in m["text"]
               and m["btype"] == "pg_notifier worker"]
        if bad:
            raise TestFailure(f"[extension]: the server log shows: {bad[0]['text']}")
        log(f"   {CYCLES} DROP/CREATE cycles: same worker pid, each cycle's 5 events arrived, "
            "no error")

    def check_log(self):
        msgs = self.cl.messages()
        crashes = [m for m in msgs if m["sev"] in ("PANIC", "TRAP")
                   or "terminated by signal" in m["text"] or "exited with exit code" in m["text"]]
        if crashes:
            raise TestFailure(f"the server log shows crashes or worker exits: "
                              f"{crashes[0]['text']}")
        log("   server log: no crash, no worker exit")

    def run(self):
        steps = [("setup", self.setup), ("[operator]", self.step_operator),
                 ("[guc]", self.step_guc), ("[control]", self.step_control),
                 ("[latin1]", self.step_latin1), ("[retry]", self.step_retry),
                 ("[readonly]", self.step_readonly), ("[extension]", self.step_extension),
                 ("server log", self.check_log)]
        only = os.environ.get("PG_NOTIFIER_HARDENING_STEPS")
        failures = []
        for tag, fn in steps:
            if only and tag != "setup" and tag.strip("[]") not in only.split(","):
                continue
            t0 = time.monotonic()
            log(f"{tag}")
            try:
                fn()
            except TestFailure as ex:
                if tag == "setup":
                    raise
                log(f"   FAILED: {ex}")
                failures.append(f"{tag} {ex}")
            log(f"   ({time.monotonic() - t0:.1f}s)")
        if failures:
            raise TestFailure(f"{len(failures)} step(s) failed:\n  " + "\n  ".join(failures))


def main():
    forget_libpq_environment()
    cl = Cluster(NAME, f"pg_notifier.databases = '{DB}, {DB_EXT}'\n"
                 "pg_notifier.retry_base_ms = 10\n"
                 f"pg_notifier.retry_max_ms = {RETRY_MAX_MS}\n"
                 "lock_timeout = 1\n")
    done = cl.guard(TIMEOUT)
    ok = False
    t = None
    try:
        cl.initdb()
        cl.start()
        t = Test(cl)
        t.run()
        ok = True
    finally:
        done.set()
        if t is not None:
            t.rcv.stop()
        if not ok:
            print(f"---- server log tail ({cl.logfile})\n{cl.log_tail()}----",
                  file=sys.stderr, flush=True)
        cl.cleanup()
    print(f"PASS {NAME}: no bait operator ran in the worker, GUCs of a queue trigger do not "
          "outlive its write, control NOTIFYs harmless, last_error readable in LATIN1, huge "
          "Retry-After saturates, read-only default ignored, DROP/CREATE races survived",
          flush=True)
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
