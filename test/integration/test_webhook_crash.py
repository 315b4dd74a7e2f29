#!/usr/bin/python3
"""pg_notifier's webhook sink across worker crashes, server restarts and
receiver outages, on a cluster of its own.

It kills a server process (kill -9 makes the postmaster reinitialise and log
"terminated by signal 9", which test/run's log check rightly calls a crash), so
it does NOT use the cluster test/run started.  It runs initdb in a fresh
temporary directory as the OS user postgres and starts that cluster with
shared_preload_libraries = 'pg_notifier', pg_notifier.databases =
'postgres, wh' and small retry settings (retry_base_ms 50, retry_max_ms 500).
synchronous_commit stays on: a commit must survive the crash-restart.  The
cluster is always stopped and its directory removed at the end (also on
failure, watchdog, SIGTERM or Ctrl-C).

An HTTP/1.1 keep-alive receiver on 127.0.0.1 records every request and
answers 200 after 20 ms, so requests are in flight when the worker dies.  It
records webhook-id, the events of the body and the time.  Two routes on one
watched channel: A (batch_size 1, concurrency 8, signed) and B (batch_size 10,
concurrency 2), both max_attempts 100.

  0. warm-up: 50 events, each delivered exactly once to both routes,
     signatures valid;
  1. kill -9 of the worker while deliveries are in progress (3000 events, all
     in notifier.deliveries, part of them delivered): the cluster
     reinitialises, the worker comes back, and every event reaches both
     routes at least once.  Duplicates are at most concurrency x batch_size
     (A: 8, B: 20), and identifiable by webhook-id (a repeated webhook-id,
     which carries the same events as before: an event never travels under
     two ids);
  2. pg_ctl restart -m fast mid-delivery: the same;
  3. pg_ctl restart -m immediate mid-delivery: the same;
  4. receiver down: stopped (keep-alive connections cut), 1000 events
     produced and written to notifier.deliveries, the server restarted
     (-m fast) while the receiver is still down, then the receiver comes back
     on the same port: every event delivered, none twice, none dead;
  finally the server log: no PANIC, no TRAP, no process terminated by a
  signal other than our one kill -9, exactly one reinitialisation.

Run it as root with Debian's python3 (psycopg 3.1):
    /usr/bin/python3 test/integration/test_webhook_crash.py
Environment: PG_MAJOR (15), PG_BIN or PG_CONFIG (where the server binaries
are), PG_OS_USER (postgres), PG_NOTIFIER_TEST_TIMEOUT (watchdog, 240 s),
PG_NOTIFIER_CRASH_EVENTS (events per crash phase, 3000), KEEP_TEST_DIR (keep
the directory).
"""

import base64
import collections
import hmac
import os
import signal
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, log  # noqa: E402
from owncluster import ClusterTest, poll  # noqa: E402
from recorder import Receiver, expected_signature  # noqa: E402

NAME = "test_webhook_crash"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
EVENTS = int(os.environ.get("PG_NOTIFIER_CRASH_EVENTS", "3000"))
DOWN_EVENTS = 1000
DB = "wh"
CHANNEL = "wh_crash"
WORKER = "pg_notifier worker"
LAUNCHER = "pg_notifier launcher"
WORKING_STATES = ("listening", "forwarding")
DELAY = 0.02                 # the receiver answers after 20 ms
SECRET = "whsec_" + base64.b64encode(b"pg_notifier crash test secret 32b").decode()
# path -> (concurrency, batch_size)
ROUTES = {"/a": (8, 1), "/b": (2, 10)}


def signature_ok(r):
    if r.wid is None or r.ts is None or r.sig is None:
        return False
    want = expected_signature(SECRET, r.wid, r.ts, r.body)
    return any(hmac.compare_digest(s, want) for s in r.sig.split())


class Test(ClusterTest):
    def __init__(self):
        super().__init__(NAME, f"pg_notifier.databases = 'postgres, {DB}'\n"
                         "pg_notifier.retry_base_ms = 50\npg_notifier.retry_max_ms = 500",
                         TIMEOUT, Receiver(delay=DELAY))
        self.rid = {}

    def worker(self):
        rows = self.cl.q(DB, "SELECT pid, state, channels FROM notifier.status() "
                             "WHERE database = %s", (DB,))
        return rows[0] if rows else None

    def wait_listening(self, timeout, not_pid=None):
        def fn():
            w = self.worker()
            ok = (w is not None and w[0] is not None and w[0] != not_pid
                  and w[1] in WORKING_STATES and CHANNEL in (w[2] or []))
            return ok, w
        return poll(f"worker of {DB} listening on {CHANNEL!r}"
                    + (f" with a pid other than {not_pid}" if not_pid else ""), timeout, fn)

    def rows(self, tag):
        """route id -> {status: count} for the events of phase tag."""
        out = collections.defaultdict(dict)
        for rid, st, n in self.cl.q(DB, "SELECT route_id, status, count(*) FROM notifier.deliveries "
                                        "WHERE payload->'row'->>'phase' = %s GROUP BY 1, 2", (tag,)):
            out[rid][st] = n
        return out

    def produce(self, tag, n, parts=3):
        per = (n + parts - 1) // parts
        for k in range(parts):
            lo, hi = k * per + 1, min(n, (k + 1) * per)
            if lo <= hi:
                self.cl.q(DB, "INSERT INTO items (phase, n) SELECT %s, g "
                              "FROM generate_series(%s::int, %s::int) g", (tag, lo, hi))

    def wait_written(self, tag, n, timeout=60):
        def fn():
            r = self.rows(tag)
            counts = {p: sum(r.get(self.rid[p], {}).values()) for p in ROUTES}
            return all(c >= n for c in counts.values()), counts
        return poll(f"{n} events of phase {tag} in notifier.deliveries for each route", timeout,
                    fn, interval=0.05)

    def wait_delivered(self, tag, n, timeout):
        def fn():
            r = self.rows(tag)
            ok = all(r.get(self.rid[p], {}).get("delivered", 0) >= n for p in ROUTES)
            return ok, {p: r.get(self.rid[p], {}) for p in ROUTES}
        secs, seen = poll(f"all {n} events of phase {tag} delivered on both routes", timeout, fn,
                          interval=0.1)
        for p in ROUTES:
            got = seen[p]
            if got != {"delivered": n}:
                raise TestFailure(f"phase {tag}, route {p}: deliveries rows {got}, "
                                  f"expected {{'delivered': {n}}}")
        return secs

    def received(self, tag, path):
        """Receipts of phase tag events on path: list of (request, [n...])."""
        out = []
        for r in self.rcv.requests():
            if r.path != path:
                continue
            if r.evs is None:
                raise TestFailure(f"route {path}: a body that is not an event or an array of "
                                  f"events: {r.body[:200]!r}")
            ns = [n for ph, n, _ in r.evs if ph == tag]
            if ns:
                if len(ns) != len(r.evs):
                    raise TestFailure(f"route {path}: a request mixes phases: {r.wid}")
                out.append((r, ns, [i for _, _, i in r.evs]))
        return out

    def analyse(self, tag, n, crashes):
        """Every event at least once on each route; duplicates at most
        concurrency x batch_size per crash, each in a request whose webhook-id
        was seen before.  Returns {path: duplicates}."""
        dups = {}
        for path, (conc, batch) in ROUTES.items():
            got = self.received(tag, path)
            occ = collections.Counter()
            wids = collections.Counter()
            bad_wid = []
            for r, ns, ids in got:
                occ.update(ns)
                wids[r.wid] += 1
                if r.wid != ids[0]:
                    bad_wid.append(f"webhook-id {r.wid!r}, first event {ids[0]!r}")
            missing = sorted(set(range(1, n + 1)) - set(occ))
            extra = sum(c - 1 for c in occ.values())
            limit = conc * batch * crashes
            if bad_wid:
                raise TestFailure(f"phase {tag}, route {path}: {len(bad_wid)} requests whose "
                                  f"webhook-id is not their first event's id: {bad_wid[:3]}")
            if missing:
                raise TestFailure(f"phase {tag}, route {path}: {len(missing)} of {n} events never "
                                  f"reached the receiver: {missing[:10]}...")
            if extra > limit:
                raise TestFailure(f"phase {tag}, route {path}: {extra} duplicate deliveries, more "
                                  f"than concurrency x batch_size x crashes = {limit}")
            # duplicates must be repeats of a request (same webhook-id)
            dup_ns = {k for k, c in occ.items() if c > 1}
            unident = [r.wid for r, ns, _ in got if dup_ns & set(ns) and wids[r.wid] < 2]
            if unident:
                raise TestFailure(f"phase {tag}, route {path}: duplicated events in requests whose "
                                  f"webhook-id was not repeated (not identifiable): {unident[:5]}")
            # a batch is one message: a repeated webhook-id carries the same
            # events, and an event travels under one webhook-id only
            body_of, wid_of, split = {}, {}, []
            for r, ns, ids in got:
                if body_of.setdefault(r.wid, ids) != ids:
                    split.append(f"webhook-id {r.wid}: {ids} after {body_of[r.wid]}")
                split += [f"event {i} under {wid_of[i]} and {r.wid}" for i in ids
                          if wid_of.setdefault(i, r.wid) != r.wid]
            if split:
                raise TestFailure(f"phase {tag}, route {path}: a resent batch is not the same "
                                  f"message: {split[:3]}")
            dup_w = sorted(w for w, c in wids.items() if c > 1)
            log(f"   route {path} (concurrency {conc}, batch {batch}): {len(got)} requests, "
                f"all {n} events, {extra} duplicate event deliveries (limit {limit}), repeated "
                f"webhook-ids: {len(dup_w)}{' e.g. ' + ', '.join(dup_w[:3]) if dup_w else ''}")
            dups[path] = extra
        return dups

    def progress(self, tag):
        return {p: sum(len(ns) for _, ns, _ in self.received(tag, p)) for p in ROUTES}

    def crash_phase(self, tag, label, disrupt):
        cl = self.cl
        log(f"{label}: {EVENTS} events, then {tag} while they are being delivered")
        t0 = time.monotonic()
        self.produce(tag, EVENTS)
        secs, _ = self.wait_written(tag, EVENTS)
        log(f"   {EVENTS} events in notifier.deliveries for both routes "
            f"{time.monotonic() - t0:.2f} s after the first commit")
        # mid-delivery: some delivered, not all
        _, prog = poll(f"phase {tag}: deliveries under way on route /a",
                       30, lambda: (lambda p: (p["/a"] >= EVENTS // 8, p))(self.progress(tag)),
                       interval=0.05)
        before = self.worker()
        prog = self.progress(tag)
        inflight = cl.q(DB, "SELECT route_id, count(*) FROM notifier.deliveries "
                            "WHERE status = 'in_flight' GROUP BY 1")
        t1 = time.monotonic()
        took = disrupt(before[0])
        log(f"   {tag} after {t1 - t0:.2f} s, with events received {prog} of {EVENTS} per route, "
            f"in_flight rows just before: {dict(inflight)}"
            + (f"; pg_ctl took {took:.2f} s" if took is not None else ""))
        for p, k in prog.items():
            if k >= EVENTS:
                log(f"   note: route {p} had already received everything: not hit mid-delivery")
        secs, w = self.wait_listening(60, not_pid=before[0])
        back = time.monotonic() - t1
        self.timing(f"{tag}: worker back (new pid) after", back)
        log(f"   worker {before[0]} -> {w[0]}, listening {back:.2f} s after the {tag}")
        self.wait_delivered(tag, EVENTS, 90)
        done = time.monotonic() - t1
        self.timing(f"{tag}: all {EVENTS} events delivered to both routes after", done)
        log(f"   every event delivered on both routes {done:.2f} s after the {tag}")
        att = cl.q(DB, "SELECT route_id, attempts, count(*) FROM notifier.deliveries "
                       "WHERE payload->'row'->>'phase' = %s AND attempts <> 1 GROUP BY 1, 2 "
                       "ORDER BY 1, 2", (tag,))
        log(f"   rows with attempts <> 1 (route, attempts, rows): {att}")
        dups = self.analyse(tag, EVENTS, 1)
        self.result(f"{tag}: duplicates " + ", ".join(f"{p} {d}" for p, d in dups.items()))

    # -- disruptions ---------------------------------------------------------
    def kill9(self, pid):
        os.kill(pid, signal.SIGKILL)
        self.killed.append(pid)
        self.cl.drop_all()
        return None

    def restart(self, mode):
        return lambda pid: self.cl.restart(mode)

    # =======================================================================
    def setup(self):
        cl, rcv = self.cl, self.rcv
        log(f"cluster on 127.0.0.1:{cl.port} (pg_notifier.databases = 'postgres, {DB}', "
            f"retry 50..500 ms); receiver on 127.0.0.1:{rcv.port}, answering 200 after "
            f"{DELAY * 1000:.0f} ms")
        cl.q("postgres", f"CREATE DATABASE {DB}")
        cl.q("postgres", "SELECT pg_reload_conf()")
        cl.q(DB, "CREATE EXTENSION pg_notifier")
        cl.q(DB, "CREATE TABLE items (id bigserial PRIMARY KEY, phase text NOT NULL, n int NOT NULL)")
        cl.q(DB, "SELECT notifier.watch('items', channel => %s)", (CHANNEL,))
        with cl.connect(DB) as c:
            with c.transaction():
                for path, (conc, batch) in ROUTES.items():
                    self.rid[path] = c.execute(
                        "SELECT notifier.add_webhook(%s, %s, secret => %s, batch_size => %s, "
                        "concurrency => %s, max_attempts => 100)",
                        (CHANNEL, rcv.url(path), SECRET, batch, conc)).fetchone()[0]
        secs, w = self.wait_listening(30)
        log(f"routes {self.rid}; worker {w[0]} listening {secs:.2f} s after CREATE EXTENSION")

    # --- 0. warm-up --------------------------------------------------------
    def step_warm(self):
        rcv = self.rcv
        log("0. warm-up: 50 events, each delivered exactly once")
        self.produce("warm", 50, parts=1)
        self.wait_delivered("warm", 50, 30)
        dups = self.analyse("warm", 50, 0)
        if any(dups.values()):
            raise TestFailure(f"warm-up: duplicates without any crash: {dups}")
        bad = [r.wid for r in rcv.requests() if not signature_ok(r)]
        if bad:
            raise TestFailure(f"{len(bad)} requests with a signature that does not verify: {bad[:3]}")

    # --- 1..3. crashes and restarts mid-delivery ---------------------------
    def step_kill9(self):
        self.crash_phase("kill9", "1. kill -9 of the worker", self.kill9)

    def step_fast(self):
        self.crash_phase("fast", "2. pg_ctl restart -m fast", self.restart("fast"))

    def step_immediate(self):
        self.crash_phase("immediate", "3. pg_ctl restart -m immediate", self.restart("immediate"))

    # --- 4. receiver down (and a restart meanwhile), then back --------------
    def step_down(self):
        cl, rcv = self.cl, self.rcv
        log(f"4. receiver down: {DOWN_EVENTS} events, pg_ctl restart -m fast meanwhile, "
            "then the receiver back on the same port")
        rcv.stop()
        t0 = time.monotonic()
        self.produce("down", DOWN_EVENTS)
        self.wait_written("down", DOWN_EVENTS)
        time.sleep(1.0)
        open_rows = self.rows("down")
        log(f"   receiver down {time.monotonic() - t0:.1f} s: rows "
            + ", ".join(f"{p} {open_rows.get(self.rid[p], {})}" for p in ROUTES))
        for p in ROUTES:
            st = open_rows.get(self.rid[p], {})
            if st.get("delivered") or st.get("dead"):
                raise TestFailure(f"route {p} while the receiver was down: rows {st}")
        before = self.worker()
        took = cl.restart("fast")
        self.wait_listening(60, not_pid=before[0])
        time.sleep(1.0)
        st = self.rows("down")
        err = cl.q(DB, "SELECT max(attempts), min(last_error) FROM notifier.deliveries "
                       "WHERE payload->'row'->>'phase' = 'down'")[0]
        log(f"   restarted in {took:.2f} s while the receiver was down; after 1 s: rows "
            + ", ".join(f"{p} {st.get(self.rid[p], {})}" for p in ROUTES)
            + f"; max attempts {err[0]}, a last_error {err[1]!r}")
        rcv.start()
        t_up = time.monotonic()
        self.wait_delivered("down", DOWN_EVENTS, 60)
        up = time.monotonic() - t_up
        self.timing(f"down: {DOWN_EVENTS} events delivered after the receiver came back in", up)
        log(f"   receiver back after {t_up - t0:.1f} s down: all {DOWN_EVENTS} events delivered "
            f"{up:.2f} s later")
        dups = self.analyse("down", DOWN_EVENTS, 0)
        self.result("down: duplicates " + ", ".join(f"{p} {d}" for p, d in dups.items()))

    # --- at the end: every request --------------------------------------------
    def finish(self):
        rcv = self.rcv
        bad = [r.wid for r in rcv.requests() if r.path == "/a" and not signature_ok(r)]
        if bad:
            raise TestFailure(f"{len(bad)} requests with a signature that does not verify: {bad[:3]}")
        stray = {r.path for r in rcv.requests()} - set(ROUTES)
        if stray:
            raise TestFailure(f"requests to unknown paths: {stray}")
        log(f"   {len(rcv.requests())} requests in all, every signature of route /a verified")
        super().finish()


STEPS = [
    Step("warm", "warm-up: 50 events, each delivered exactly once", Test.step_warm, needed=True),
    Step("kill9", "kill -9 of the worker mid-delivery", Test.step_kill9),
    Step("fast", "pg_ctl restart -m fast mid-delivery", Test.step_fast),
    Step("immediate", "pg_ctl restart -m immediate mid-delivery", Test.step_immediate),
    Step("down", "receiver down, a restart meanwhile, then back", Test.step_down),
]


if __name__ == "__main__":
    Test().run(STEPS)
