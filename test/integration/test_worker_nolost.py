#!/usr/bin/python3
"""Integration test of the worker's promise "no lost batch" (issue 13, items 4
to 8): what happens to a batch of events when some of them, or the sink, fail.

Runs against a cluster started with shared_preload_libraries = pg_notifier
(test/run does that).  It creates a database of its own, adds it to
pg_notifier.databases, sets pg_notifier.max_batch_bytes = 1MB and
pg_notifier.max_webhook_body_bytes = 1536kB (ALTER SYSTEM, put back on exit),
and checks:

  [mixed_outbox]  delivery => 'outbox': one transaction of legitimate events
                  mixed with an event that is json but not jsonb ({"n":
                  1e200000}), one a trigger on the queue table refuses and
                  one a check constraint of the queue table refuses: every
                  legitimate event is queued exactly once, in order; each bad
                  one is a row of notifier.dead_letters with its reason;
                  notifier.stats counts them as dead; the outbox is empty;
  [mixed_notify]  the same with delivery => 'notify', plus a hand-written
                  NOTIFY ch, '{"n":1e200000}' from a role with no privileges
                  in the same transaction (a dead letter too);
  [deferred]      a queue table owned by an unprivileged role with a
                  constraint trigger INITIALLY DEFERRED: it never runs as the
                  worker (at its commit, as 0.1 did), each event is a dead
                  letter with the reason, the outbox is emptied;
  [refs]          delivery => 'notify', 30 oversize events of 100 kB sent as
                  references: each is resolved to its event, and no INSERT
                  into the queue table holds more than max_batch_bytes (a
                  statement trigger records each one); a reference to one of
                  them NOTIFYed by an unprivileged role on another routed
                  channel is not resolved there (the reference is forwarded);
  [bytes]         delivery => 'outbox', 24 events of 400 kB and one of
                  1.7 MB in one transaction to a queue route and a webhook
                  route with batch_size 1000: every queue INSERT stays under
                  max_batch_bytes, every request body under
                  max_webhook_body_bytes, the large event goes alone, every
                  event arrives exactly once;
  [ahead]         6 MB of NOTIFYs in one transaction: the worker holds 4 x
                  max_batch_bytes of them in memory and the rest in a
                  temporary file: every one is queued exactly once, in order;
  [transient]     a trigger on the queue table fails with lock_not_available
                  (outbox mode) or serialization_failure (notify mode) until
                  the test lets it pass: the worker retries with backoff,
                  writes nothing meanwhile (outbox: the rows stay), and then
                  every event arrives exactly once, in order, no dead letter;
  [lock]          a real lock: with lock_timeout = 200ms for the database
                  (ALTER DATABASE ... SET, before the worker starts), the
                  queue table locked IN SHARE MODE by the test: the worker's
                  inserts time out and are retried; once the lock is released
                  every event arrives exactly once.  (If the worker pins its
                  own lock_timeout, it simply waits: noted, not a failure.)

At the end the worker has the pid it had at the start.  On exit (also on
failure) the settings are put back, the role and the database dropped.

On 0.1 the mixed and transient steps lose whole batches (deleted from the
outbox all the same), the forged reference copies the other channel's event,
the refs batch is one INSERT of 3 MB, and the GUCs do not exist.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER...).  Run it with
Debian's python3 (psycopg 3.1).  Environment: PG_NOTIFIER_TEST_TIMEOUT
(watchdog, seconds, 240).
"""

import os
import sys
import time

from psycopg import sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Step, WorkerCtx, connect, ident, log, parse, run_worker_test,  # noqa: E402
                   short, wait_for, worker_status)
from recorder import Receiver  # noqa: E402

NAME = "test_worker_nolost"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_nolost")
ROLE = "notifier_it_nolost_unpriv"
OWNER = "notifier_it_nolost_owner"
MAX_BATCH = 1024 * 1024
MAX_BODY = 1536 * 1024
SETTINGS = {"pg_notifier.max_batch_bytes": "1MB", "pg_notifier.max_webhook_body_bytes": "1536kB"}
ARRIVE = int(os.environ.get("PG_NOTIFIER_TEST_ARRIVE", "60"))  # seconds events may take to arrive (generous: never a timing assertion)


# ------------------------------------------------------------------ helpers

def add_queue(db, channel, table):
    return db.execute("SELECT notifier.add_queue(%s, %s)", (channel, table)).fetchone()[0]


def queue_table(db, name, payload_type="jsonb"):
    """A queue table, and a statement trigger that logs the size of each INSERT
    into batch_log."""
    db.execute(sql.SQL("CREATE TABLE {t} (qid bigserial PRIMARY KEY, channel text NOT NULL, "
                       "payload {ty} NOT NULL, received_at timestamptz)")
               .format(t=ident(name), ty=sql.SQL(payload_type)))
    db.execute(sql.SQL("CREATE TRIGGER log_batch AFTER INSERT ON {} REFERENCING NEW TABLE AS new "
                       "FOR EACH STATEMENT EXECUTE FUNCTION public.log_batch()").format(ident(name)))


def routed_table(db, mode, t, columns, trigger_fn):
    """Table t (columns), watched on channel t with delivery mode, routed to a
    queue table t_q with a BEFORE INSERT row trigger running trigger_fn.
    Returns (queue table, route id)."""
    q = f"{t}_q"
    queue_table(db, q)
    db.execute(sql.SQL("CREATE TABLE {} ({})").format(ident(t), sql.SQL(columns)))
    db.execute(sql.SQL("CREATE TRIGGER refuse BEFORE INSERT ON {} FOR EACH ROW "
                       "EXECUTE FUNCTION {}()").format(ident(q), ident("public", trigger_fn)))
    db.execute("SELECT notifier.watch(%s, channel => %s, delivery => %s)", (t, t, mode))
    return q, add_queue(db, t, q)


def queued(db, table):
    """The events of a queue table, in queue order."""
    return [parse(t) for (t,) in db.execute(sql.SQL("SELECT payload::text FROM {} ORDER BY qid")
                                            .format(ident(table))).fetchall()]


def wait_rows(db, table, n, what):
    wait_for(f"{n} rows in {table} ({what})",
             lambda: (lambda c: (c >= n, c))(db.execute(sql.SQL("SELECT count(*) FROM {}")
                                                        .format(ident(table))).fetchone()[0]),
             ARRIVE)


def keys_of(events):
    return [e["key"]["id"] if isinstance(e, dict) and "key" in e else e for e in events]


def check_exactly_once(ctx, what, got, want):
    ctx.check(got == want, f"{what}: queued keys {short(got, 300)}, expected each of "
              f"{short(want, 300)} once, in order")


def dead_letters(db, rid):
    return db.execute("SELECT event_id, event, reason FROM notifier.dead_letters "
                      "WHERE route_id = %s ORDER BY id", (rid,)).fetchall()


def check_batches(ctx, db, table, limit):
    """Every INSERT into table held at most limit bytes, or one event."""
    rows = db.execute("SELECT n, bytes FROM batch_log WHERE tbl = %s ORDER BY id", (table,)).fetchall()
    over = [(n, b) for n, b in rows if b > limit and n > 1]
    ctx.check(rows and not over, f"INSERTs into {table} (events, bytes): {short(rows, 300)}; "
              f"over {limit} bytes with more than one event: {over}")
    return rows


# ------------------------------------------------------------------ steps

def mixed(ctx, mode):
    db = ctx.db
    t = f"mix_{mode}"
    q, rid = routed_table(db, mode, t, "id int PRIMARY KEY, v json", "refuse")
    db.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT no_bad_check "
                       "CHECK (payload->'row'->'v'->>'bad' IS DISTINCT FROM 'check')").format(ident(q)))

    with db.transaction():
        ins = sql.SQL("INSERT INTO {} SELECT g, pg_catalog.json_build_object('k', g) "
                      "FROM generate_series(%s::int, %s::int) g").format(ident(t))
        one = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(ident(t))
        db.execute(ins, (1, 10))
        db.execute(one, (11, '{"n": 1e200000}'))
        db.execute(ins, (12, 20))
        db.execute(one, (21, '{"bad": "trigger"}'))
        db.execute(one, (22, '{"bad": "check"}'))
        db.execute(ins, (23, 30))
        if mode == "notify":
            db.execute(sql.SQL("SET LOCAL ROLE {}").format(ident(ROLE)))
            db.execute(sql.SQL("NOTIFY {}, '{{\"n\":1e200000}}'").format(ident(t)))
            db.execute("RESET ROLE")
    want = list(range(1, 11)) + list(range(12, 21)) + list(range(23, 31))
    ndead = 4 if mode == "notify" else 3

    wait_rows(db, q, len(want), "legitimate events")
    wait_for(f"{ndead} dead letters of route {rid}",
             lambda: (lambda d: (len(d) >= ndead, d))(dead_letters(db, rid)), ARRIVE)
    check_exactly_once(ctx, f"{mode}: the legitimate events", keys_of(queued(db, q)), want)
    dead = dead_letters(db, rid)
    ctx.check(len(dead) == ndead, f"{mode}: {len(dead)} dead letters, expected {ndead}: {short(dead, 400)}")
    reasons = " | ".join(r for _, _, r in dead)
    for need in ("22003", "refused by the queue trigger", "no_bad_check"):
        ctx.check(need in reasons, f"{mode}: no dead letter's reason has {need!r}: {short(reasons, 400)}")
    keys = sorted(parse(e)["key"]["id"] for _, e, _ in dead if parse_or_none(e) and "key" in parse(e))
    ctx.check(keys == [11, 21, 22], f"{mode}: dead letters of keys {keys}, expected [11, 21, 22]")
    ctx.check(all(eid is not None for eid, e, _ in dead if e.startswith('{"id"')),
              f"{mode}: a dead letter of an event without its event_id: {short(dead, 300)}")
    if mode == "notify":
        hand = [e for eid, e, _ in dead if eid is None]
        ctx.check(hand == ['{"n":1e200000}'], f"notify: the hand-written NOTIFY's dead letter: {hand}")
    s = db.execute("SELECT dead, written FROM notifier.stats WHERE route_id = %s", (rid,)).fetchone()
    ctx.check(s == (ndead, len(want)), f"{mode}: notifier.stats (dead, written) = {s}, "
              f"expected ({ndead}, {len(want)})")
    left = db.execute("SELECT count(*) FROM notifier.outbox WHERE channel = %s", (t,)).fetchone()[0]
    ctx.check(left == 0, f"{mode}: {left} rows left in the outbox")
    log(f"{mode}: {len(want)} events queued once each, {len(dead)} dead letters: {short(reasons, 300)}")


def parse_or_none(text):
    try:
        return parse(text)
    except ValueError:
        return None


def step_deferred(ctx):
    """A queue table owned by an unprivileged role, with a constraint trigger
    INITIALLY DEFERRED: it would fire at the worker's commit, with the
    worker's rights, and fail the whole batch there.  PostgreSQL refuses to
    fire it inside the security-restricted write, so the table takes no
    event: each is a dead letter with that reason, and the trigger never
    runs as the worker."""
    db = ctx.db
    queue_table(db, "def_q")
    db.execute("""
        CREATE TABLE def_log (who text, id int);
        CREATE FUNCTION def_check() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.def_log VALUES (current_user, (NEW.payload->'key'->>'id')::int);
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER def_check AFTER INSERT ON def_q
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION def_check();
        CREATE TABLE def_t (id int PRIMARY KEY)""")
    db.execute(sql.SQL("ALTER TABLE def_q OWNER TO {o}; ALTER TABLE def_log OWNER TO {o}")
               .format(o=ident(OWNER)))
    db.execute("SELECT notifier.watch('def_t', channel => 'def', delivery => 'outbox')")
    rid = add_queue(db, "def", "def_q")
    db.execute("INSERT INTO def_t SELECT generate_series(1, 5)")
    dead = wait_for(f"5 dead letters of route {rid}",
                    lambda: (lambda d: (len(d) >= 5, d))(dead_letters(db, rid)), ARRIVE)[0]
    ctx.check(len(dead) == 5 and all("deferred trigger" in r for _, _, r in dead),
              f"deferred: dead letters {short(dead, 300)}, expected 5, for the deferred trigger")
    n = db.execute("SELECT count(*) FROM def_q").fetchone()[0]
    who = db.execute("SELECT who, count(*) FROM def_log GROUP BY who").fetchall()
    ctx.check(n == 0 and who == [], f"deferred: {n} rows queued, the trigger ran as {who}: "
              "expected none (it must never run as the worker)")
    left = db.execute("SELECT count(*) FROM notifier.outbox WHERE channel = 'def'").fetchone()[0]
    ctx.check(left == 0, f"deferred: {left} rows left in the outbox")
    log(f"deferred: 5 dead letters ({short(dead[0][2] if dead else None, 100)})")


def step_refs(ctx):
    db = ctx.db
    db.execute("CREATE TABLE refs_t (id int PRIMARY KEY, s text)")
    queue_table(db, "refs_qa", "json")
    queue_table(db, "refs_qb", "json")
    db.execute("SELECT notifier.watch('refs_t', channel => 'refs_a', delivery => 'notify')")
    add_queue(db, "refs_a", "refs_qa")
    add_queue(db, "refs_b", "refs_qb")
    big = "x" * 100_000
    with db.transaction():
        db.execute("INSERT INTO refs_t SELECT g, %s || g FROM generate_series(1, 30) g", (big,))
    wait_rows(db, "refs_qa", 30, "resolved references")
    evs = queued(db, "refs_qa")
    whole = [e for e in evs if isinstance(e, dict) and (e.get("row") or {}).get("s", "").startswith(big)]
    ctx.check(len(whole) == 30 and keys_of(evs) == list(range(1, 31)),
              f"refs: {len(whole)} of {len(evs)} queued events are whole, keys {short(keys_of(evs), 200)}")
    rows = check_batches(ctx, db, "refs_qa", MAX_BATCH)
    log(f"refs: 30 references of 100 kB resolved; INSERTs (events, bytes): {short(rows, 200)}")

    ref = db.execute("SELECT max(id) FROM notifier.payloads").fetchone()[0]
    forged = '{"id":"1.1","op":"INSERT","ref":%d,"truncated":true}' % ref
    with connect(DB) as u:
        u.execute(sql.SQL("SET ROLE {}").format(ident(ROLE)))
        u.execute("SELECT pg_notify('refs_b', %s)", (forged,))
    wait_rows(db, "refs_qb", 1, "the forged reference")
    got = db.execute("SELECT payload::text FROM refs_qb").fetchall()
    ctx.check(got == [(forged,)], f"refs: a reference to channel refs_a's event {ref} NOTIFYed on refs_b "
              f"was queued as {short(got, 200)}, expected the reference itself")


def step_bytes(ctx):
    db = ctx.db
    ctx.receiver = Receiver(delay=0.01)
    ctx.receiver.start()
    db.execute("CREATE TABLE bytes_t (id int PRIMARY KEY, s text)")
    queue_table(db, "bytes_q", "json")
    db.execute("SELECT notifier.watch('bytes_t', channel => 'bytes_o', delivery => 'outbox')")
    add_queue(db, "bytes_o", "bytes_q")
    db.execute("SELECT notifier.add_webhook('bytes_o', %s, batch_size => 1000)",
               (ctx.receiver.url("/bytes"),))
    n = 25
    with db.transaction():
        db.execute("INSERT INTO bytes_t SELECT g, pg_catalog.repeat('y', 400000) FROM generate_series(1, %s::int) g",
                   (n - 1,))
        # larger than both limits: it goes alone
        db.execute("INSERT INTO bytes_t VALUES (%s, pg_catalog.repeat('w', 1700000))", (n,))
    wait_rows(db, "bytes_q", n, "400 kB events")
    check_exactly_once(ctx, "bytes: queue", keys_of(queued(db, "bytes_q")), list(range(1, n + 1)))
    rows = check_batches(ctx, db, "bytes_q", MAX_BATCH)

    def received():
        reqs = [r for r in ctx.receiver.requests() if r.path == "/bytes" and r.answered]
        return sum(len(r.evs or []) for r in reqs) >= n, reqs
    reqs, _ = wait_for(f"{n} events at the webhook", received, ARRIVE)
    ids = [e[2] for r in reqs for e in (r.evs or [])]
    ctx.check(len(ids) == n and len(set(ids)) == n, f"bytes: webhook got {len(ids)} events, "
              f"{len(set(ids))} distinct, expected {n} once each")
    sizes = [(len(r.evs or []), len(r.body)) for r in reqs]
    over = [(k, b) for k, b in sizes if b > MAX_BODY and k > 1]
    ctx.check(not over, f"bytes: request bodies over {MAX_BODY} bytes with several events: {over}")
    ctx.check(max(k for k, _ in sizes) == 3, f"bytes: requests did not carry the 3 events that "
              f"fit in {MAX_BODY} bytes: {sizes}")
    alone = [(k, b) for k, b in sizes if b > 1_700_000]
    ctx.check(rows[-1][0] == 1 and rows[-1][1] > 1_700_000 and alone and alone[0][0] == 1,
              f"bytes: the 1.7 MB event did not go alone: queue {rows[-1:]}, webhook {alone}")
    log(f"bytes: queue INSERTs (events, bytes) {short(rows, 200)}; webhook requests (events, bytes) "
        f"{short(sizes, 200)}")


def step_ahead(ctx):
    """6 MB of NOTIFYs in one transaction: 4 x max_batch_bytes in memory, the
    rest spilled to a temporary file and read back; nothing lost or doubled."""
    db = ctx.db
    queue_table(db, "ahead_q", "json")
    add_queue(db, "ahead", "ahead_q")
    n = 3000
    pad = "z" * 2000
    with db.transaction():
        db.execute("SELECT pg_notify('ahead', pg_catalog.json_build_object('n', g, 'pad', %s::text)::text) "
                   "FROM generate_series(1, %s::int) g", (pad, n))
    wait_rows(db, "ahead_q", n, "6 MB of notifications")
    got = [e["n"] for e in queued(db, "ahead_q")]
    check_exactly_once(ctx, "ahead", got, list(range(1, n + 1)))
    log(f"ahead: {n} notifications of 2 kB queued once each, in order")


def transient(ctx, mode, code):
    db = ctx.db
    t = f"tr_{mode}"
    q, rid = routed_table(db, mode, t, "id int PRIMARY KEY", "fail_while_flagged")
    db.execute("UPDATE tr_flag SET code = %s", (code,))
    before = db.execute("SELECT last_value FROM tr_attempts").fetchone()[0]
    for k in range(5):
        db.execute(sql.SQL("INSERT INTO {} SELECT generate_series(%s::int, %s::int)").format(ident(t)),
                   (10 * k + 1, 10 * k + 10))
    wait_for(f"{mode}: the worker failing ({code}) three times",
             lambda: (lambda v: (v >= before + 3, v))(
                 db.execute("SELECT last_value FROM tr_attempts").fetchone()[0]), ARRIVE)
    n = db.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(q))).fetchone()[0]
    ctx.check(n == 0, f"{mode}: {n} rows written while the sink fails")
    if mode == "outbox":
        left = db.execute("SELECT count(*) FROM notifier.outbox WHERE channel = %s", (t,)).fetchone()[0]
        ctx.check(left == 50, f"outbox: {left} rows in the outbox while the sink fails, expected 50")
    db.execute("UPDATE tr_flag SET code = NULL")
    wait_rows(db, q, 50, "after the failures stopped")
    check_exactly_once(ctx, f"{mode} after {code}", keys_of(queued(db, q)), list(range(1, 51)))
    dead = dead_letters(db, rid)
    ctx.check(not dead, f"{mode}: dead letters after a transient error: {short(dead, 200)}")
    tries = db.execute("SELECT last_value FROM tr_attempts").fetchone()[0] - before
    log(f"{mode}: {tries} failed attempts ({code}), then 50 events queued once each")


def step_lock(ctx):
    db = ctx.db
    queue_table(db, "lk_q")
    db.execute("CREATE TABLE lk_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('lk_t', channel => 'lk', delivery => 'outbox')")
    add_queue(db, "lk", "lk_q")
    wpid = worker_status(db, DB)["pid"]
    locker = connect(DB, autocommit=False)
    seen = set()
    try:
        locker.execute("LOCK TABLE lk_q IN SHARE MODE")
        db.execute("INSERT INTO lk_t SELECT generate_series(1, 20)")
        t0 = time.monotonic()
        while len(seen) < 2 and time.monotonic() - t0 < 15:
            r = db.execute("SELECT xact_start FROM pg_stat_activity WHERE pid = %s "
                           "AND wait_event_type = 'Lock'", (wpid,)).fetchone()
            if r is not None:
                seen.add(r[0])
            time.sleep(0.02)
        n = db.execute("SELECT count(*) FROM lk_q").fetchone()[0]
        ctx.check(n == 0, f"lock: {n} rows written while the table was locked")
    finally:
        locker.rollback()
        locker.close()
    if len(seen) < 2:
        ctx.note(f"lock: the worker waited on the lock in {len(seen)} transaction(s) only "
                 "(its own lock_timeout wins over the database's): no retry seen")
    wait_rows(db, "lk_q", 20, "after the lock was released")
    check_exactly_once(ctx, "lock", keys_of(queued(db, "lk_q")), list(range(1, 21)))
    log(f"lock: the worker waited on the lock in {len(seen)} transactions; then 20 events queued once each")


FIXTURES = """
CREATE TABLE batch_log (id bigserial PRIMARY KEY, tbl text, n int, bytes bigint);
CREATE FUNCTION log_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.batch_log (tbl, n, bytes)
    SELECT TG_TABLE_NAME, count(*), coalesce(sum(octet_length(payload::text)), 0) FROM new;
    RETURN NULL;
END $$;
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload->'row'->'v'->>'bad' = 'trigger' THEN
        RAISE EXCEPTION 'refused by the queue trigger';
    END IF;
    RETURN NEW;
END $$;
CREATE TABLE tr_flag (code text);
INSERT INTO tr_flag VALUES (NULL);
CREATE SEQUENCE tr_attempts;
SELECT nextval('tr_attempts');
CREATE FUNCTION fail_while_flagged() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c text := (SELECT code FROM public.tr_flag);
BEGIN
    IF c IS NOT NULL THEN
        PERFORM nextval('public.tr_attempts');
        RAISE EXCEPTION 'simulated transient failure' USING ERRCODE = c;
    END IF;
    RETURN NEW;
END $$;
"""


def before_worker(conn):
    conn.execute(FIXTURES)
    conn.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '200ms'").format(ident(DB)))


STEPS = [
    Step("mixed_outbox", "outbox: legitimate events mixed with bad ones",
         lambda ctx: mixed(ctx, "outbox")),
    Step("mixed_notify", "notify: legitimate events mixed with bad ones",
         lambda ctx: mixed(ctx, "notify")),
    Step("deferred", "a deferred constraint trigger on the queue table", step_deferred),
    Step("refs", "references: resolved per channel, in batches bounded by bytes", step_refs),
    Step("bytes", "400 kB events: queue and webhook batches bounded by bytes", step_bytes),
    Step("ahead", "notify: a burst larger than an inbox", step_ahead),
    Step("transient_outbox", "outbox: lock_not_available retried",
         lambda ctx: transient(ctx, "outbox", "55P03")),
    Step("transient_notify", "notify: serialization_failure retried",
         lambda ctx: transient(ctx, "notify", "40001")),
    Step("lock", "a real lock timeout retried", step_lock),
]


if __name__ == "__main__":
    run_worker_test(NAME, STEPS, WorkerCtx(), DB, SETTINGS, before_worker, roles=(ROLE, OWNER),
                    timeout=TIMEOUT)
