#!/usr/bin/python3
"""Route filters (jsonpath) and transforms (regprocedure) end to end, in the
worker of a database of its own:

  [filter]    one channel, four routes: an unfiltered queue (all events), a
              queue filtered on '$.op == "UPDATE" && $.row.status == "paid"', a
              webhook filtered on '$.row.total > 100', and a queue filtered on
              '$.row.flag', which is not boolean for some events: each gets
              exactly the matching events, in order; an event whose filter result
              is not boolean is a dead letter of that route alone, with the
              reason, and one whose flag is null is filtered; notifier.stats counts
              received = written + filtered + dead per route; alter_route()
              changes the filter live, and reset removes it;
  [transform] a transform's result is what a queue stores and what a webhook
              receives (under the original event's webhook-id, and, ordered by
              key, with the original event's key); an event whose
              transform raises, or returns NULL, is a dead letter of its route
              alone, with the reason; the other events of its batch are written;
  [hostile]   a transform owned and set by a role that is not a superuser runs as
              that role in a security-restricted operation: its ALTER ROLE and
              CREATE ROLE fail, its set_config('search_path', ..., false) is gone
              at the next event; once the role loses EXECUTE on it, its events
              are dead letters saying so;
  [deferred]  a transform that queues a deferred trigger: the trigger never
              runs as the worker (at its commit); that event is a dead letter.

Runs against test/run's cluster (its database added to pg_notifier.databases
by itlib.run_worker_test).  Debian's python3:
    /usr/bin/python3 test/integration/test_route_filter.py [STEP...]
"""

import json
import os
import sys
from decimal import Decimal

from psycopg import sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Step, TestFailure, WorkerCtx, canon, ident, log, parse,  # noqa: E402
                   run_worker_test, short, wait_for)
from recorder import Receiver  # noqa: E402

NAME = "test_route_filter"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "180"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_route_filter")
ROLE = "notifier_it_rf_owner"
WAIT = 30


def queue_events(db, table):
    """The payloads of a queue table, in order, as Python values."""
    return [canon(parse(p)) for (p,) in
            db.execute(sql.SQL("SELECT payload::text FROM {} ORDER BY id").format(ident(table)))]


def wait_rows(db, table, n, what):
    wait_for(what, lambda: (lambda c: (c >= n, c))(
        db.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table))).fetchone()[0]), WAIT)


def queue_table(db, name):
    db.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, channel text NOT NULL,"
                       " payload jsonb NOT NULL)").format(ident(name)))


def dead_letters(db, route):
    return db.execute("SELECT event_id, reason FROM notifier.dead_letters WHERE route_id = %s"
                      " ORDER BY id", (route,)).fetchall()


def bodies(ctx, path):
    """(webhook-id, body) of the 2xx requests of a path, in order."""
    return [(r.wid, canon(parse(r.body))) for r in ctx.receiver.requests(path) if r.status == 200]


def check_stats(ctx, route, received, written, filtered, dead, what):
    def seen():
        row = ctx.db.execute("SELECT received, written, filtered, dead FROM notifier.stats"
                             " WHERE route_id = %s", (route,)).fetchone()
        return row == (received, written, filtered, dead), row
    try:
        wait_for(f"stats of {what}", seen, WAIT)
    except TestFailure as ex:
        ctx.check(False, f"{ex}; expected received {received}, written {written}, "
                         f"filtered {filtered}, dead {dead}")


def ensure_receiver(ctx):
    if ctx.receiver is None:
        ctx.receiver = Receiver("route_filter").start()
    return ctx.receiver


def step_filter(ctx):
    db = ctx.db
    rcv = ensure_receiver(ctx)
    db.execute("CREATE TABLE rf_orders (id int PRIMARY KEY, status text, total numeric, flag jsonb)")
    db.execute("SELECT notifier.watch('rf_orders', channel => 'rf')")
    for t in ("rf_all", "rf_paid", "rf_flag"):
        queue_table(db, t)
    r_all = db.execute("SELECT notifier.add_queue('rf', 'rf_all')").fetchone()[0]
    r_paid = db.execute("SELECT notifier.add_queue('rf', 'rf_paid',"
                        " filter => '$.op == \"UPDATE\" && $.row.status == \"paid\"')").fetchone()[0]
    r_hook = db.execute("SELECT notifier.add_webhook('rf', %s, filter => '$.row.total > 100',"
                        " ordered => 'route')",
                        (rcv.url("/big"),)).fetchone()[0]
    r_flag = db.execute("SELECT notifier.add_queue('rf', 'rf_flag', filter => '$.row.flag')"
                        ).fetchone()[0]

    # inserts and updates, in several transactions
    totals = [Decimal(5), Decimal(50), Decimal(500), Decimal("100.5")]
    flags = ["true", "false", "null", '"yes"', "true"]
    with db.transaction():
        for i in range(1, 121):
            db.execute("INSERT INTO rf_orders VALUES (%s, 'new', %s, %s)",
                       (i, totals[i % 4], flags[i % 5]))
    for i in range(1, 121, 3):
        db.execute("UPDATE rf_orders SET status = %s WHERE id = %s",
                   ("paid" if i % 2 else "shipped", i))
    db.execute("UPDATE rf_orders SET status = 'paid' WHERE id BETWEEN 40 AND 60")
    # the last event: once the unfiltered queue has it, the worker has written
    # every event before it to every queue route (one transaction per batch)
    db.execute("INSERT INTO rf_orders VALUES (999, 'last', 1, 'false')")
    wait_for("the last event in the unfiltered queue",
             lambda: (lambda e: (bool(e) and e[-1]["row"]["id"] == 999, len(e)))(
                 queue_events(db, "rf_all")), WAIT)
    events = queue_events(db, "rf_all")
    n = len(events)
    ctx.check(n > 150, f"unfiltered queue: only {n} events")

    want_paid = [e for e in events if e["op"] == "UPDATE" and e["row"]["status"] == "paid"]
    got_paid = queue_events(db, "rf_paid")
    ctx.check(got_paid == want_paid,
              f"filtered queue: {len(got_paid)} events, expected the {len(want_paid)} paid updates"
              f" in order; first difference near {short(next((g for g, w in zip(got_paid, want_paid) if g != w), None))}")

    want_big = [e for e in events if e["row"]["total"] > 100]
    wait_for("the webhook's events", lambda: (len(bodies(ctx, "/big")) >= len(want_big),
                                              len(bodies(ctx, "/big"))), WAIT)
    got_big = [b for _, b in bodies(ctx, "/big")]
    ctx.check(got_big == want_big,
              f"filtered webhook: {len(got_big)} requests, expected the {len(want_big)} events of total > 100")
    pending = db.execute("SELECT count(*) FROM notifier.deliveries WHERE route_id = %s"
                         " AND status <> 'delivered'", (r_hook,)).fetchone()[0]
    ctx.check(pending == 0, f"filtered webhook: {pending} deliveries not delivered")

    not_bool = [e for e in events if e["row"]["flag"] == "yes"]
    want_flag = [e for e in events if e["row"]["flag"] is True]
    got_flag = queue_events(db, "rf_flag")
    ctx.check(got_flag == want_flag,
              f"queue filtered on $.row.flag: {len(got_flag)} events, expected {len(want_flag)}")
    dead = dead_letters(db, r_flag)
    ctx.check([d[0] for d in dead] == [e["id"] for e in not_bool],
              f"filter of a non-boolean result: dead letters {[d[0] for d in dead][:5]}...,"
              f" expected the {len(not_bool)} events whose flag is \"yes\"")
    ctx.check(all("single boolean result is expected" in d[1] for d in dead),
              f"filter of a non-boolean result: reasons {sorted(set(d[1] for d in dead))!r}")
    others = db.execute("SELECT count(*) FROM notifier.dead_letters WHERE route_id <> %s",
                        (r_flag,)).fetchone()[0]
    ctx.check(others == 0, f"{others} dead letters of the other routes")

    check_stats(ctx, r_all, n, n, 0, 0, "the unfiltered queue")
    check_stats(ctx, r_paid, n, len(want_paid), n - len(want_paid), 0, "the paid queue")
    check_stats(ctx, r_hook, n, len(want_big), n - len(want_big), 0, "the webhook")
    check_stats(ctx, r_flag, n, len(want_flag), n - len(want_flag) - len(not_bool), len(not_bool),
                "the queue filtered on $.row.flag")
    ctx.result(f"filter: {n} events; paid queue {len(got_paid)}, webhook {len(got_big)},"
               f" flag queue {len(got_flag)} + {len(dead)} dead letters (not boolean)")
    log(f"dead letter reason: {dead[0][1] if dead else None!r}")

    # alter_route: a new filter for the events after it, then none
    db.execute("SELECT notifier.alter_route(%s, filter => '$.row.status == \"shipped\"')", (r_paid,))
    db.execute("SELECT notifier.remove_route(%s)", (r_flag,))
    db.execute("UPDATE rf_orders SET status = 'shipped' WHERE id = 1")
    db.execute("UPDATE rf_orders SET status = 'shipped' WHERE id = 2")
    db.execute("UPDATE rf_orders SET status = 'paid' WHERE id = 3")
    wait_rows(db, "rf_all", n + 3, "the events after alter_route()")
    got = queue_events(db, "rf_paid")[len(got_paid):]
    ctx.check([(e["row"]["id"], e["row"]["status"]) for e in got] == [(1, "shipped"), (2, "shipped")],
              f"after alter_route(filter): {[(e['row']['id'], e['row']['status']) for e in got]}")
    db.execute("SELECT notifier.alter_route(%s, reset => ARRAY['filter'])", (r_paid,))
    db.execute("UPDATE rf_orders SET status = 'new' WHERE id = 4")
    wait_rows(db, "rf_all", n + 4, "the event after reset")
    got = queue_events(db, "rf_paid")[len(got_paid) + 2:]
    ctx.check([(e["row"]["id"], e["row"]["status"]) for e in got] == [(4, "new")],
              f"after alter_route(reset): {[(e['row']['id'], e['row']['status']) for e in got]}")
    ctx.result("alter_route(): the new filter applies to the next events; reset => ARRAY['filter'] removes it")


def step_transform(ctx):
    db = ctx.db
    rcv = ensure_receiver(ctx)
    db.execute("""
        CREATE FUNCTION rf_shape(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
        BEGIN
            IF e -> 'row' ->> 'status' = 'boom' THEN
                RAISE EXCEPTION 'boom in order %', e -> 'row' ->> 'id';
            END IF;
            IF e -> 'row' ->> 'status' = 'void' THEN
                RETURN NULL;
            END IF;
            RETURN jsonb_build_object('order_id', e -> 'row' -> 'id',
                                      'status', e -> 'row' -> 'status',
                                      'op', lower(e ->> 'op'));
        END
        $$""")
    db.execute("CREATE TABLE rf_t2 (id int PRIMARY KEY, status text)")
    db.execute("SELECT notifier.watch('rf_t2', channel => 'rf2')")
    for t in ("rf_all2", "rf_shaped"):
        queue_table(db, t)
    r_all = db.execute("SELECT notifier.add_queue('rf2', 'rf_all2')").fetchone()[0]
    r_q = db.execute("SELECT notifier.add_queue('rf2', 'rf_shaped', transform => 'rf_shape(jsonb)')"
                     ).fetchone()[0]
    r_w = db.execute("SELECT notifier.add_webhook('rf2', %s, filter => '$.op == \"INSERT\"',"
                     " transform => 'rf_shape(jsonb)', ordered => 'route')",
                     (rcv.url("/shaped"),)).fetchone()[0]
    # two paused routes ordered by key, one transformed: their deliveries
    # stay, and each event has the same key in both (the original event's)
    r_k, r_k0 = (db.execute("SELECT notifier.add_webhook('rf2', %s, ordered => 'key',"
                            " transform => %s::regprocedure)",
                            (rcv.url("/paused"), t)).fetchone()[0]
                 for t in ("rf_shape(jsonb)", None))
    for r in (r_k, r_k0):
        db.execute("SELECT notifier.pause_route(%s)", (r,))

    with db.transaction():
        for i in range(1, 31):
            db.execute("INSERT INTO rf_t2 VALUES (%s, %s)",
                       (i, {7: "boom", 11: "void"}.get(i, "ok")))
    db.execute("UPDATE rf_t2 SET status = 'later' WHERE id <= 5")
    n = 35
    wait_rows(db, "rf_all2", n, "every event in the unfiltered queue")
    events = queue_events(db, "rf_all2")

    def shape(e):
        return {"order_id": e["row"]["id"], "status": e["row"]["status"], "op": e["op"].lower()}

    bad = {7, 11}
    good = [e for e in events if not (e["op"] == "INSERT" and e["row"]["id"] in bad)]
    want_q = [shape(e) for e in good]
    got_q = queue_events(db, "rf_shaped")
    ctx.check(got_q == [canon(x) for x in want_q],
              f"transformed queue: {short(got_q[:3])}..., expected {short(want_q[:3])}... "
              f"({len(got_q)} vs {len(want_q)})")
    want_w = [(e["id"], canon(shape(e))) for e in good if e["op"] == "INSERT"]
    wait_for("the transformed webhook's events",
             lambda: (len(bodies(ctx, "/shaped")) >= len(want_w), len(bodies(ctx, "/shaped"))), WAIT)
    got_w = bodies(ctx, "/shaped")
    ctx.check(got_w == want_w,
              f"transformed webhook: {short(got_w[:2])}..., expected {short(want_w[:2])}..."
              f" ({len(got_w)} vs {len(want_w)})")
    by_id = {e["row"]["id"]: e["id"] for e in events if e["op"] == "INSERT"}
    for route, what in ((r_q, "queue"), (r_w, "webhook")):
        dead = dead_letters(db, route)
        ctx.check([d[0] for d in dead] == [by_id[7], by_id[11]],
                  f"transformed {what}: dead letters {dead}, expected the events of orders 7 and 11")
        if len(dead) == 2:
            ctx.check("boom in order 7" in dead[0][1] and "rf_shape" in dead[0][1],
                      f"transformed {what}: reason {dead[0][1]!r}")
            ctx.check("returned NULL" in dead[1][1], f"transformed {what}: reason {dead[1][1]!r}")
            log(f"{what} dead letter reasons: {dead[0][1]!r}; {dead[1][1]!r}")
    check_stats(ctx, r_q, n, n - 2, 0, 2, "the transformed queue")
    check_stats(ctx, r_w, n, 30 - 2, 5, 2, "the transformed webhook")
    check_stats(ctx, r_all, n, n, 0, 0, "the unfiltered queue")
    same, differ, keys = db.execute(
        "SELECT count(*) FILTER (WHERE k.order_key = k0.order_key),"
        " count(*) FILTER (WHERE k.order_key IS DISTINCT FROM k0.order_key),"
        " count(DISTINCT k.order_key)"
        " FROM notifier.deliveries k JOIN notifier.deliveries k0 USING (event_id)"
        " WHERE k.route_id = %s AND k0.route_id = %s", (r_k, r_k0)).fetchone()
    ctx.check(same == n - 2 and differ == 0 and keys == 28,
              f"ordered by key: {same} events with the original event's key, {differ} with"
              f" another, {keys} distinct keys; expected {n - 2}, 0, 28 (orders 7 and 11 are dead)")
    ctx.result(f"transform: queue stored {len(got_q)} shaped events, webhook got {len(got_w)}"
               f" (webhook-id = the event's id); orders 7 (raises) and 11 (NULL) dead letters only")

    # another function under the transform's name, of another shape: its
    # events are dead letters, it is never called as jsonb -> jsonb
    def dead_after(statement, i, what):
        db.execute(statement)
        db.execute("INSERT INTO rf_t2 VALUES (%s, 'ok')", (i,))
        wait_rows(db, "rf_all2", n + i - 99, f"the event after the transform was {what}")
        return dead_letters(db, r_q)

    dead = dead_after("DROP FUNCTION rf_shape(jsonb);"
                      " CREATE FUNCTION rf_shape(e jsonb) RETURNS text LANGUAGE sql AS 'SELECT e::text'",
                      100, "replaced")
    ctx.check(len(dead) == 3 and "is not a function from jsonb to jsonb" in dead[2][1],
              f"transform replaced by a jsonb -> text function: dead letters {dead}")
    dead = dead_after("DROP FUNCTION rf_shape(jsonb)", 101, "dropped")
    ctx.check(len(dead) == 4 and "does not exist" in dead[3][1],
              f"transform dropped: dead letters {dead}")
    ctx.check(len(queue_events(db, "rf_shaped")) == len(want_q),
              "rows stored after the transform was replaced or dropped")
    log(f"replaced: {dead[2][1] if len(dead) > 2 else None!r}; dropped: {dead[3][1] if len(dead) > 3 else None!r}")


def role_may_route(db, table, channel, queue):
    """ROLE, not a superuser, may add queue routes into queue and create
    functions and tables in schema rf_evil; table (a definition) is watched
    on channel."""
    db.execute("CREATE SCHEMA IF NOT EXISTS rf_evil")
    db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA rf_evil TO {}").format(ident(ROLE)))
    db.execute(sql.SQL("GRANT EXECUTE ON FUNCTION notifier.add_queue(text, regclass, jsonpath,"
                       " regprocedure, integer) TO {}").format(ident(ROLE)))
    db.execute(f"CREATE TABLE {table}")
    db.execute("SELECT notifier.watch(%s, channel => %s)", (table.split()[0], channel))
    queue_table(db, queue)
    db.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(ident(queue), ident(ROLE)))


def step_hostile(ctx):
    db = ctx.db
    role_may_route(db, "rf_t3 (id int PRIMARY KEY, mode text)", "rf3", "rf_hostile")
    queue_table(db, "rf_all3")
    db.execute("SELECT notifier.add_queue('rf3', 'rf_all3')")

    db.execute(sql.SQL("SET ROLE {}").format(ident(ROLE)))
    try:
        # what it sees, what it tries; an event of mode 'raw' does ALTER ROLE
        # outside an exception block
        db.execute("""
            CREATE FUNCTION rf_evil.grab(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
            DECLARE
                seen_path text := current_setting('search_path');
                seen_user text := current_user;
                seen_timeout text := current_setting('statement_timeout');
                alter_error text;
                create_error text;
            BEGIN
                IF e -> 'row' ->> 'mode' = 'raw' THEN
                    EXECUTE format('ALTER ROLE %I SUPERUSER', current_user);
                END IF;
                BEGIN
                    EXECUTE format('ALTER ROLE %I SUPERUSER', current_user);
                EXCEPTION WHEN OTHERS THEN
                    alter_error := SQLERRM;
                END;
                BEGIN
                    CREATE ROLE notifier_it_rf_created;
                EXCEPTION WHEN OTHERS THEN
                    create_error := SQLERRM;
                END;
                PERFORM set_config('search_path', 'rf_evil, pg_catalog', false);
                PERFORM set_config('statement_timeout', '1ms', false);
                RETURN jsonb_build_object('id', e -> 'row' -> 'id', 'path', seen_path,
                                          'user', seen_user, 'timeout', seen_timeout,
                                          'alter_error', alter_error,
                                          'create_error', create_error);
            END
            $$""")
        route = db.execute("SELECT notifier.add_queue('rf3', 'rf_hostile',"
                           " transform => 'rf_evil.grab(jsonb)')").fetchone()[0]
    finally:
        db.execute("RESET ROLE")

    with db.transaction():                       # one batch of several events
        for i in range(1, 6):
            db.execute("INSERT INTO rf_t3 VALUES (%s, 'try')", (i,))
    db.execute("INSERT INTO rf_t3 VALUES (6, 'raw')")
    for i in range(7, 10):                       # batches of their own
        db.execute("INSERT INTO rf_t3 VALUES (%s, 'try')", (i,))
    wait_rows(db, "rf_all3", 9, "every event in the unfiltered queue")
    rows = queue_events(db, "rf_hostile")
    ctx.check([r["id"] for r in rows] == [1, 2, 3, 4, 5, 7, 8, 9],
              f"hostile transform: stored {[r.get('id') for r in rows]}, expected 1..9 but 6")
    for r in rows:
        ctx.check(r["user"] == ROLE, f"hostile transform ran as {r['user']!r}, not {ROLE!r}")
        ctx.check(r["path"] == "pg_catalog, pg_temp",
                  f"hostile transform of {r['id']} saw search_path {r['path']!r}")
        ctx.check(r["timeout"] != "1ms", f"hostile transform of {r['id']} saw statement_timeout 1ms")
        ctx.check(r["alter_error"] is not None and r["create_error"] is not None,
                  f"hostile transform of {r['id']}: ALTER ROLE -> {r['alter_error']!r},"
                  f" CREATE ROLE -> {r['create_error']!r}")
    dead = dead_letters(db, route)
    ctx.check(len(dead) == 1 and "superuser" in dead[0][1],
              f"hostile transform: dead letters {dead}, expected event 6's, refused ALTER ROLE")
    su = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()[0]
    created = db.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'notifier_it_rf_created'"
                         ).fetchone()[0]
    ctx.check(not su and created == 0, f"after the transform: superuser {su}, roles created {created}")
    if rows:
        log(f"what it got: ALTER ROLE -> {rows[0]['alter_error']!r}; CREATE ROLE -> {rows[0]['create_error']!r}")
    log(f"event 6: {dead[0][1] if dead else None!r}")

    # the worker's own settings are untouched: a plain route still works,
    # and no statement of it was cancelled by a 1ms statement_timeout
    db.execute("INSERT INTO rf_t3 SELECT g, 'try' FROM generate_series(100, 199) g")
    wait_rows(db, "rf_all3", 109, "a batch after the hostile transform")

    # the owner loses EXECUTE: its events become dead letters saying so
    db.execute(sql.SQL("ALTER FUNCTION rf_evil.grab(jsonb) OWNER TO {}").format(ident(db.info.user)))
    db.execute("REVOKE EXECUTE ON FUNCTION rf_evil.grab(jsonb) FROM PUBLIC")
    db.execute("INSERT INTO rf_t3 VALUES (1000, 'try')")
    wait_rows(db, "rf_all3", 110, "the event after REVOKE")
    dead = dead_letters(db, route)
    ctx.check(len(dead) == 2 and "permission denied for transform" in dead[1][1],
              f"owner without EXECUTE: dead letters {dead}")
    n_rows = len(queue_events(db, "rf_hostile"))
    ctx.check(n_rows == 8 + 100, f"owner without EXECUTE: {n_rows} rows stored, expected 108")
    ctx.result("hostile transform: ran as its owner, ALTER/CREATE ROLE refused, search_path and"
               " statement_timeout back at each event; owner without EXECUTE -> dead letter")
    if len(dead) == 2:
        log(f"reason: {dead[1][1]!r}")


def step_deferred(ctx):
    """A transform that queues a deferred trigger (an INSERT into a table with
    a constraint trigger INITIALLY DEFERRED, whose function makes the
    transform's owner a superuser): at the worker's commit it would run with
    the worker's rights.  Inside the transform's security-restricted
    operation PostgreSQL refuses it: the event is a dead letter, the others
    are stored, and the trigger never runs as the worker."""
    db = ctx.db
    role_may_route(db, "rf_t4 (id int PRIMARY KEY)", "rf4", "rf_deferred")
    db.execute(sql.SQL("SET ROLE {}").format(ident(ROLE)))
    try:
        db.execute(sql.SQL("""
            CREATE TABLE rf_evil.def_log (id int);
            CREATE TABLE rf_evil.def_who (who text, id int);
            CREATE FUNCTION rf_evil.def_fire() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO rf_evil.def_who VALUES (current_user, NEW.id);
                ALTER ROLE {role} SUPERUSER;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER def_fire AFTER INSERT ON rf_evil.def_log
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rf_evil.def_fire();
            CREATE FUNCTION rf_evil.defer(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
            BEGIN
                IF (e -> 'row' ->> 'id')::int = 2 THEN
                    INSERT INTO rf_evil.def_log VALUES (2);
                END IF;
                RETURN e;
            END $$""").format(role=ident(ROLE)))
        route = db.execute("SELECT notifier.add_queue('rf4', 'rf_deferred',"
                           " transform => 'rf_evil.defer(jsonb)')").fetchone()[0]
    finally:
        db.execute("RESET ROLE")
    with db.transaction():
        for i in range(1, 4):
            db.execute("INSERT INTO rf_t4 VALUES (%s)", (i,))
    wait_for("two events stored and one dead letter",
             lambda: (lambda q, d: (q + d >= 3, (q, d)))(
                 db.execute("SELECT count(*) FROM rf_deferred").fetchone()[0],
                 len(dead_letters(db, route))), WAIT)
    ids = [e["row"]["id"] for e in queue_events(db, "rf_deferred")]
    dead = db.execute("SELECT (event::jsonb -> 'row' ->> 'id')::int, reason"
                      " FROM notifier.dead_letters WHERE route_id = %s", (route,)).fetchall()
    ran_as = db.execute("SELECT who FROM rf_evil.def_who").fetchall()
    su = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()[0]
    ctx.check(ids == [1, 3], f"deferred: stored {ids}, expected 1 and 3")
    # refused where it was queued, or (once the queue sink's SET CONSTRAINTS
    # ALL IMMEDIATE of an earlier write in the transaction is in force) fired
    # at once, still as the owner, whose ALTER ROLE is refused
    ctx.check(len(dead) == 1 and dead[0][0] == 2
              and ("deferred trigger" in dead[0][1] or "must be superuser" in dead[0][1]),
              f"deferred: dead letters {dead}, expected event 2's, its trigger refused")
    ctx.check(ran_as == [] and not su, f"deferred: the trigger ran as {ran_as}; superuser {su}")
    ctx.result("a transform's deferred trigger is refused inside its security-restricted"
               " operation: that event alone is a dead letter, the trigger never runs as the worker")
    if dead:
        log(f"reason: {dead[0][1]!r}")


STEPS = [
    Step("filter", "filters on two routes of one channel, erring filter, stats, alter_route", step_filter),
    Step("transform", "transform's shape to a queue and a webhook, erring and NULL transform", step_transform),
    Step("hostile", "a hostile transform gains nothing; owner without EXECUTE", step_hostile),
    Step("deferred", "a transform's deferred trigger never runs as the worker", step_deferred),
]


if __name__ == "__main__":
    run_worker_test(NAME, STEPS, WorkerCtx(), DB, roles=(ROLE,), timeout=TIMEOUT)
