#!/usr/bin/python3
"""Disabling dead endpoints (issue 19) end to end: the worker, a real HTTP
receiver (test/lib/recorder.py) and a LISTEN client on pg_notifier_events.

  [gone]     two routes on one channel: /gone answers 410 (ordered => 'route',
             so one request at a time), /witness 200.  After 5 events /gone
             got exactly one request; its route is disabled: notifier.stats
             state 'disabled' with the reason, the LISTEN client got
             {"route": id, "state": "disabled", "reason": ...}; the witness got
             every event, also one sent after the disabling, while /gone got
             nothing more and keeps 5 pending (the 410 one is dead).  The
             receiver fixed, resume_route() -> {"state": "active", "reason":
             null}, the 5 kept events are delivered, and redeliver_dead() sends
             the 410 one: every event delivered.  pause_route()/resume_route()
             of the witness are told too (paused, active);
  [after]    disable_after '2 seconds' against a receiver that always answers
             503 (max_attempts 100): the route is disabled with a reason naming
             disable_after and the last status (503), told on
             pg_notifier_events; not before 2 seconds after its first failure
             (disabled_at - failing_since, both from the database).  A route
             of the same channel with disable_after NULL, failing as long, is
             still active;
  [reset]    disable_after '2 seconds': a route fails for over a second, one
             success clears failing_since, then it fails again.  At a moment
             more than 2 s after the first failure, but less than 2 s after
             the first failure since the success, it is still active; it is
             disabled once it has failed 2 s without a success.

Runs against test/run's cluster (its database added to pg_notifier.databases
by itlib.run_worker_test, pg_notifier.retry_base_ms 50 and retry_max_ms 300 so
that retries come quickly).  Debian's python3:
    /usr/bin/python3 test/integration/test_webhook_disable.py [STEP...]
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Listener, Step, TestFailure, WorkerCtx, log, run_worker_test, wait_for  # noqa: E402
from recorder import Receiver, always, ok  # noqa: E402

NAME = "test_webhook_disable"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "150"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_disable")
SETTINGS = {"pg_notifier.retry_base_ms": "50", "pg_notifier.retry_max_ms": "300"}
EVENTS = "pg_notifier_events"
GONE_REASON = "the endpoint answered HTTP status 410 Gone"


def receiver(ctx):
    if ctx.receiver is None:
        ctx.receiver = Receiver("disable").start()
    return ctx.receiver


def state(db, rid):
    return db.execute("SELECT state, state_reason, pending FROM notifier.stats "
                      "WHERE route_id = %s", (rid,)).fetchone()


def counts(db, rid):
    return dict(db.execute("SELECT status, count(*) FROM notifier.deliveries "
                           "WHERE route_id = %s GROUP BY 1", (rid,)).fetchall())


def delivered(db, rid, n):
    return lambda: (counts(db, rid).get("delivered", 0) >= n, counts(db, rid))


def told(lis, rid, st, timeout=20):
    """The next pg_notifier_events message about route rid with state st, parsed."""
    got = lis.until(lambda ch, p: ch == EVENTS and json.loads(p).get("route") == rid
                    and json.loads(p).get("state") == st, timeout,
                    f"{EVENTS}: route {rid} {st}")
    return got[-1].payload


def watched(db, table, channel):
    db.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch(%s, channel => %s)", (table, channel))


def add_route(db, channel, url, **args):
    names = "".join(f", {k} => %s" for k in args)
    return db.execute(f"SELECT notifier.add_webhook(%s, %s{names})",
                      (channel, url, *args.values())).fetchone()[0]


def step_gone(ctx):
    db, R = ctx.db, receiver(ctx)
    lis = Listener(DB, [EVENTS])
    try:
        R.on("/gone", always(410))
        R.on("/witness", ok())
        watched(db, "gone_t", "gone")
        gid = add_route(db, "gone", R.url("/gone"), ordered="route")
        wid = add_route(db, "gone", R.url("/witness"))
        db.execute("INSERT INTO gone_t SELECT generate_series(1, 5)")

        payload = told(lis, gid, "disabled")
        ctx.check(json.loads(payload) == {"route": gid, "state": "disabled", "reason": GONE_REASON},
                  f"{EVENTS} payload {payload!r}")
        ctx.check(list(json.loads(payload)) == ["route", "state", "reason"],
                  f"{EVENTS} keys out of order: {payload!r}")
        wait_for("the witness route got the 5 events", delivered(db, wid, 5), 20)
        # one more event after the disabling: the witness gets it, /gone does not
        db.execute("INSERT INTO gone_t VALUES (6)")
        wait_for("the witness route got event 6", delivered(db, wid, 6), 20)
        wait_for("the disabled route holds event 6",
                 lambda: (counts(db, gid) == {"dead": 1, "pending": 5}, counts(db, gid)), 20)
        ctx.check(R.count("/gone") == 1, f"/gone got {R.count('/gone')} requests, expected 1")
        st = state(db, gid)
        ctx.check(st == ("disabled", GONE_REASON, 5), f"stats of the disabled route: {st}")
        ctx.check(state(db, wid)[0] == "active", f"stats of the witness: {state(db, wid)}")
        log(f"410: route {gid} disabled after 1 request, {EVENTS} said {payload}; "
            f"stats {st}; the witness got all 6 events")

        R.on("/gone", ok())
        db.execute("SELECT notifier.resume_route(%s)", (gid,))
        payload = told(lis, gid, "active")
        ctx.check(json.loads(payload) == {"route": gid, "state": "active", "reason": None},
                  f"{EVENTS} payload on resume: {payload!r}")
        wait_for("the 5 kept events delivered after resume_route", delivered(db, gid, 5), 20)
        n = db.execute("SELECT notifier.redeliver_dead(%s)", (gid,)).fetchone()[0]
        ctx.check(n == 1, f"redeliver_dead of the 410 row returned {n}")
        wait_for("the 410 event delivered", delivered(db, gid, 6), 20)
        got = sorted(json.loads(r.body)["key"]["id"] for r in R.requests("/gone") if r.status == 200)
        ctx.check(got == list(range(1, 7)) and state(db, gid) == ("active", None, 0),
                  f"after resume_route: events {got}, stats {state(db, gid)}")
        log(f"resume_route: {EVENTS} said {payload}; all 6 events delivered")

        db.execute("SELECT notifier.pause_route(%s)", (wid,))
        p1 = json.loads(told(lis, wid, "paused"))
        db.execute("SELECT notifier.resume_route(%s)", (wid,))
        p2 = json.loads(told(lis, wid, "active"))
        ctx.check(p2 == {"route": wid, "state": "active", "reason": None} and p1["route"] == wid,
                  f"pause/resume of the witness told {p1}, {p2}")
        ctx.result(f"410 Gone disabled route {gid} at once; told on {EVENTS}; resumed, "
                   "all events delivered; the witness unaffected")
    finally:
        lis.close()


def failing_since(db, rid):
    return db.execute("SELECT failing_since, clock_timestamp() - failing_since, disabled_at, "
                      "disabled_reason FROM notifier.routes WHERE id = %s", (rid,)).fetchone()


def step_after(ctx):
    db, R = ctx.db, receiver(ctx)
    lis = Listener(DB, [EVENTS])
    try:
        R.on("/after", always(503))
        R.on("/never", always(503))
        watched(db, "after_t", "after")
        rid = add_route(db, "after", R.url("/after"), max_attempts=100, disable_after="2 seconds")
        never = add_route(db, "after", R.url("/never"), max_attempts=100, disable_after=None)
        db.execute("INSERT INTO after_t VALUES (1)")
        payload = json.loads(told(lis, rid, "disabled"))
        reason = payload["reason"]
        ctx.check(reason.startswith("no successful delivery for disable_after since ")
                  and reason.endswith("last failure: HTTP status 503"),
                  f"disable_after reason {reason!r}")
        fs, _, dis, dreason = failing_since(db, rid)
        ctx.check(fs is not None and dis is not None and (dis - fs).total_seconds() >= 2.0,
                  f"disabled at {dis}, failing since {fs}: before disable_after")
        ctx.check(state(db, rid) == ("disabled", reason, 1) and dreason == reason,
                  f"stats of the route: {state(db, rid)}")
        n = R.count("/after")
        ctx.check(n >= 2, f"{n} requests before disable_after disabled the route")
        # disable_after NULL: failing as long, and longer, yet never disabled
        fs2, age2, dis2, _ = failing_since(db, never)
        ctx.check(fs2 is not None and age2.total_seconds() >= 2.0 and dis2 is None
                  and state(db, never)[0] == "active",
                  f"the route without disable_after: failing since {fs2} ({age2}), disabled at "
                  f"{dis2}, stats {state(db, never)}")
        log(f"disable_after '2 seconds', always 503: disabled after {n} requests, "
            f"{(dis - fs).total_seconds():.2f} s after the first failure; {EVENTS}: {payload}")
        ctx.result("disable_after: continuous failure disabled the route, with its reason")
    finally:
        lis.close()


def step_reset(ctx):
    db, R = ctx.db, receiver(ctx)
    mode = {"ok": False}
    lock = threading.Lock()

    def flaky(k, r):
        with lock:
            return (200 if mode["ok"] else 503), [], 0.0

    def set_ok(v):
        with lock:
            mode["ok"] = v

    R.on("/reset", flaky)
    watched(db, "reset_t", "reset")
    rid = add_route(db, "reset", R.url("/reset"), max_attempts=100, disable_after="2 seconds",
                    ordered="route")
    db.execute("INSERT INTO reset_t VALUES (1)")
    (first, _, _, _), _ = wait_for(
        "failing for 1.2 s", lambda: (lambda r: (r[0] is not None and r[1].total_seconds() >= 1.2,
                                                 r))(failing_since(db, rid)), 20)
    set_ok(True)
    wait_for("event 1 delivered", delivered(db, rid, 1), 20)
    wait_for("failing_since cleared by the success",
             lambda: (lambda r: (r[0] is None, r))(failing_since(db, rid)), 20)
    set_ok(False)
    db.execute("INSERT INTO reset_t VALUES (2)")
    # more than 2 s after the first failure, with failures since the success
    row, _ = wait_for("2.3 s after the first failure",
                      lambda: (lambda r: (r[0] is not None and
                                          db.execute("SELECT clock_timestamp() - %s >= '2.3 s'",
                                                     (first,)).fetchone()[0], r))(
                          failing_since(db, rid)), 20)
    second, since_second, disabled_at, _ = row
    if since_second.total_seconds() >= 2.0:
        raise TestFailure(f"inconclusive: the second failure streak is already {since_second} old")
    ctx.check(disabled_at is None and state(db, rid)[0] == "active",
              f"disabled although a success came {since_second} ago: {state(db, rid)}")
    ctx.check(second > first, f"failing_since {second} not after the success (first {first})")
    log(f"{(second - first).total_seconds():.2f} s after the first failure, failing again for "
        f"{since_second.total_seconds():.2f} s: still active")
    wait_for("disabled after 2 s of failures since the success",
             lambda: (state(db, rid)[0] == "disabled", state(db, rid)), 20)
    _, _, dis, reason = failing_since(db, rid)
    ctx.check((dis - second).total_seconds() >= 2.0, f"disabled at {dis}, failing since {second}")
    ctx.result(f"a success resets disable_after; then disabled: {reason!r}")


STEPS = [
    Step("gone", "410 Gone disables the route, resume_route sends the kept events", step_gone),
    Step("after", "disable_after of continuous failure disables the route", step_after),
    Step("reset", "a success in between resets disable_after", step_reset),
]


if __name__ == "__main__":
    run_worker_test(NAME, STEPS, WorkerCtx(), DB, SETTINGS, timeout=TIMEOUT)
