#!/usr/bin/python3
"""notifier.replay(route, since) end to end: a webhook route delivers 20
events in two groups a moment apart; replay(route, the moment between) sends
the second group again -- exactly those events, in their order, under their
own webhook-ids -- and nothing of the first.

Runs against test/run's cluster (its database added to pg_notifier.databases
by itlib.run_worker_test).  Debian's python3:
    /usr/bin/python3 test/integration/test_replay.py [STEP...]
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, WorkerCtx, log, run_worker_test, wait_for  # noqa: E402
from recorder import Receiver  # noqa: E402

NAME = "test_replay"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "120"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_replay")
PATH = "/replay"


def ids_received(ctx):
    """The event ids of the 2xx requests, in the order they were answered."""
    return [json.loads(r.body)["key"]["id"] for r in ctx.receiver.requests(PATH) if r.status == 200]


def step_replay(ctx):
    db = ctx.db
    ctx.receiver = Receiver("replay").start()
    db.execute("CREATE TABLE rp_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('rp_t', channel => 'rp')")
    route = db.execute("SELECT notifier.add_webhook('rp', %s)",
                       (ctx.receiver.url(PATH),)).fetchone()[0]

    db.execute("INSERT INTO rp_t SELECT generate_series(1, 10)")
    wait_for("the first 10 events delivered", lambda: (len(ids_received(ctx)) >= 10, None), 30)
    # the moment between: every first-group row was received before it
    since = db.execute("SELECT clock_timestamp()").fetchone()[0]
    for i in range(11, 21):
        db.execute("INSERT INTO rp_t VALUES (%s)", (i,))
    wait_for("the next 10 events delivered", lambda: (len(ids_received(ctx)) >= 20, None), 30)
    # the receiver has the requests before the worker records their outcome:
    # replay() sends the rows marked delivered
    wait_for("the 20 deliveries marked delivered",
             lambda: (db.execute("SELECT count(*) FROM notifier.deliveries WHERE route_id = %s"
                                 " AND status = 'delivered'", (route,)).fetchone()[0] == 20, None), 30)
    first = ids_received(ctx)
    wids = {json.loads(r.body)["key"]["id"]: r.wid for r in ctx.receiver.requests(PATH)}

    n = db.execute("SELECT notifier.replay(%s, %s)", (route, since)).fetchone()[0]
    ctx.check(n == 10, f"replay() returned {n}, expected the 10 events received since then")
    wait_for("the replayed events delivered", lambda: (len(ids_received(ctx)) >= 30, None), 30)
    again = ids_received(ctx)[20:]
    if sorted(again) != list(range(11, 21)):
        raise TestFailure(f"replayed {sorted(again)}, expected 11..20 (first deliveries: {first})")
    replayed_wids = [r.wid for r in ctx.receiver.requests(PATH)[20:]]
    ctx.check(all(wids[json.loads(r.body)["key"]["id"]] == r.wid
                  for r in ctx.receiver.requests(PATH)[20:]),
              f"replayed under other webhook-ids: {replayed_wids}")
    extra = len(ids_received(ctx)) - 30
    ctx.check(extra == 0, f"{extra} more requests after the replay")
    ctx.result(f"replay: events 11..20 sent again under their own ids, nothing of 1..10 ({n} rows)")
    log(f"replayed in order of arrival: {again}")


STEPS = [Step("replay", "replay(route, since) sends exactly the events since then", step_replay)]


if __name__ == "__main__":
    run_worker_test(NAME, STEPS, WorkerCtx(), DB, timeout=TIMEOUT)
