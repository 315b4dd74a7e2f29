#!/usr/bin/python3
"""Integration test of pg_notifier's outbox delivery mode (delivery => 'outbox')
with the forwarding worker: what reaches the routes, when, in which order.

Runs against a cluster started with shared_preload_libraries = pg_notifier
(test/run does that).  It creates a database of its own, adds it to
pg_notifier.databases (ALTER SYSTEM + pg_reload_conf()) and checks:

  [equal]    the same mixed workload (inserts, multi-statement transactions
             with coalesced updates, no-op updates, deletes, a key change, a
             TRUNCATE, an 8-column row with json/jsonb/array/numeric/timestamp
             values, a 20 kB row) on two identical tables, one watched with
             delivery notify (a LISTEN client collects), one with delivery
             outbox + a queue route: the same events, in the same order, once
             id/xid/ts and the table name are masked -- except the 20 kB one,
             a reference over NOTIFY and whole in the queue (= notifier.payload(ref));
  [rollback] ROLLBACK and ROLLBACK TO SAVEPOINT (coalesced and not) leave
             nothing in the outbox, the queue or at a LISTEN client (notify
             => true); what was kept arrives once;
  [notify]   notify => true: a LISTEN client gets one NOTIFY per event, sent
             by the worker (an oversize one as a reference that
             notifier.payload() resolves into the queued event), and the
             queue route on the same channel gets each event exactly once;
  [waiting]  events of a channel without route stay in notifier.outbox and
             show in notifier.outbox_stats (events, oldest_age, routed =
             false); notifier.add_queue() on that channel brings them into the
             queue and empties the outbox;
  [long]     an open transaction that wrote outbox rows (uncoalesced) does
             not hold back the events other sessions commit meanwhile; when
             it commits, its events arrive too (its coalesced ones after the
             others'), each exactly once;
  [order]    1000 single-row transactions of one session arrive in commit
             order; 4 concurrent producers (transactions of 3 events): every
             transaction's events keep their order (n of "<xid>.<n>" = 1, 2,
             3) and each producer's transactions arrive in its commit order;
             a causal chain (two sessions, each writing only after it saw the
             other's last row, one table coalesced, one not) arrives in chain
             order;
  [stats]    capture_stats().outbox_written counts the events;
             notifier.stats.outbox_events / outbox_oldest_age are 0 / NULL
             when the outbox is empty, and count the events of a route whose
             queue table is locked (the worker waits), until it is released;
  [bad]      watch(delivery => 'bogus'), notify without outbox: clear errors
             (SQLSTATE 22023), no watch created.

On exit (also on failure) pg_notifier.databases is put back as it was in
postgresql.auto.conf and the database is dropped.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER...).  Run it with
Debian's python3 (psycopg 3.1).  Environment: PG_NOTIFIER_TEST_TIMEOUT
(watchdog, seconds, 200).
"""

import collections
import datetime
import os
import sys
import time
from decimal import Decimal

from psycopg import sql
from psycopg.rows import dict_row

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Listener, Step, TestFailure, Threads, canon, connect,  # noqa: E402
                   expect_error, ident, log, parse, run_worker_test, short, text_of, wait_for,
                   WorkerCtx, worker_status)

NAME = "test_outbox"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "200"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_outbox")
ARRIVE = 30          # seconds an event may take to reach the queue (generous: never a timing assertion)


class Ctx(WorkerCtx):
    def status(self):
        return worker_status(self.db, DB)


# ------------------------------------------------------------------ helpers

def masked(ev):
    """An event with what differs between two runs of the same change masked:
    the xid (n of "<xid>.<n>" is kept), ts, the table name, a ref number."""
    if not isinstance(ev, dict):
        return ev
    m = dict(ev)
    if isinstance(m.get("id"), str) and "." in m["id"]:
        m["id"] = "X." + m["id"].split(".", 1)[1]
    for k, v in (("xid", "X"), ("ts", "T"), ("table", "T"), ("ref", "R")):
        if k in m:
            m[k] = v
    return m


def qtable(name):
    return sql.SQL(".").join(ident(p) for p in name.split("."))


def queued(db, channel, table="notifier.queue", key="id"):
    """[(queue id, event)] of channel, in queue order."""
    cur = db.execute(sql.SQL("SELECT {k}, payload::text FROM {t} WHERE channel = %s ORDER BY {k}")
                     .format(k=ident(key), t=qtable(table)), (channel,))
    return [(qid, canon(parse(text))) for qid, text in cur.fetchall()]


def queue_count(db, channel, table="notifier.queue"):
    return db.execute(sql.SQL("SELECT count(*) FROM {} WHERE channel = %s").format(qtable(table)),
                      (channel,)).fetchone()[0]


def outbox_count(db, channel):
    return db.execute("SELECT count(*) FROM notifier.outbox WHERE channel = %s",
                      (channel,)).fetchone()[0]


def wait_queued(db, channel, n, timeout=ARRIVE, table="notifier.queue"):
    """Wait until channel has n events in the queue table (more is an error)."""
    def probe():
        k = queue_count(db, channel, table)
        if k > n:
            raise TestFailure(f"{k} events of {channel!r} in {table}, expected {n}")
        return k == n, k
    return wait_for(f"{n} events of {channel!r} in {table}", probe, timeout, interval=0.02)[1]


def wait_row_queued(db, channel, col, value, timeout=ARRIVE):
    """Wait until an event whose row.col = value is in notifier.queue."""
    q = ("SELECT count(*) FROM notifier.queue WHERE channel = %s "
         "AND payload->'row'->>%s = %s")
    return wait_for(f"event with row.{col} = {value!r} on {channel!r} in notifier.queue",
                    lambda: (db.execute(q, (channel, col, str(value))).fetchone()[0] > 0, None),
                    timeout, interval=0.01)[1]


def outbox_watch(db, table, channel, **opts):
    """notifier.watch(table, channel, delivery => 'outbox', opts...)."""
    args = [sql.SQL("{} => {}").format(ident(k), sql.Literal(v)) for k, v in opts.items()]
    db.execute(sql.SQL("SELECT notifier.watch({}, channel => {}, delivery => 'outbox'{})").format(
        sql.Literal(table), sql.Literal(channel),
        sql.SQL("").join(sql.SQL(", ") + a for a in args)))


def add_queue(db, channel, table=None):
    if table is None:
        return db.execute("SELECT notifier.add_queue(%s)", (channel,)).fetchone()[0]
    return db.execute("SELECT notifier.add_queue(%s, %s)", (channel, table)).fetchone()[0]


# -------------------------------------------------------------------- steps

EQ_COLS = ("id int PRIMARY KEY, k text, n numeric, j json, jb jsonb, arr int[], "
           "ts timestamptz, body text")
BIG = text_of(20000, 20)
TYPED = (
    '{"a": [1, 2.50, null, true], "s": "quote \\" backslash \\\\ é ✓", "n": {"deep": {}}}',
    '{"z": 1, "a": [1e3, -0.0001], "u": "\\u00e9"}',
    [1, None, 3],
    datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    'multi\nline\ttab "quoted" \\ é ✓ 😀',
)


def eq_workload(conn, table):
    """The mixed workload of [equal] on table (conn not autocommit)."""
    T = ident(table)

    def tx(*stmts):
        for q, *p in stmts:
            conn.execute(sql.SQL(q).format(t=T), p[0] if p else None)
        conn.commit()

    tx(("INSERT INTO {t} (id, k, n) VALUES (1, 'a', 1.50), (2, 'b', 2), (3, 'c', NULL)",))
    tx(("INSERT INTO {t} (id, k) VALUES (10, 'new')",),          # coalesced: one INSERT
       ("UPDATE {t} SET k = 'upd' WHERE id = 10",),
       ("UPDATE {t} SET n = 10.25 WHERE id = 10",),
       ("UPDATE {t} SET k = 'a2' WHERE id = 1",),                # coalesced: one UPDATE
       ("UPDATE {t} SET n = n * 2 WHERE id = 1",))
    tx(("UPDATE {t} SET k = k WHERE id = 2",))                   # no-op: no event
    tx(("UPDATE {t} SET n = 2.0 WHERE id = 2",),                 # numerically equal, but not the same
       ("UPDATE {t} SET n = 2 WHERE id = 2",))                   # back again: no-op after all
    tx(("DELETE FROM {t} WHERE id = 3",))
    tx(("UPDATE {t} SET id = 20 WHERE id = 2",))                 # key change
    tx(("INSERT INTO {t} (id, k) VALUES (40, 'gone')",),         # inserted and deleted: nothing
       ("DELETE FROM {t} WHERE id = 40",),
       ("INSERT INTO {t} (id, k) VALUES (41, 'x')",),
       ("UPDATE {t} SET k = 'y' WHERE id = 41",),
       ("DELETE FROM {t} WHERE id = 1",))
    tx(("INSERT INTO {t} VALUES (50, 'typed', 12345.678900, %s::json, %s::jsonb, %s, %s, %s)",
        (TYPED[0], TYPED[1], TYPED[2], TYPED[3], TYPED[4])),)
    tx(("INSERT INTO {t} (id, k, body) VALUES (60, 'big', %s)", (BIG,)),)
    tx(("UPDATE {t} SET k = 'typed2', arr = arr || 4 WHERE id = 50",))
    tx(("TRUNCATE {t}",))
    tx(("INSERT INTO {t} (id, k) VALUES (99, 'END')",))


EQ_OPS = collections.Counter({"INSERT": 9, "UPDATE": 2, "DELETE": 3, "TRUNCATE": 1})


def is_end(p):
    return '"END"' in p


def step_equal(ctx):
    db = ctx.db
    db.execute(sql.SQL("CREATE TABLE eq_n ({c}); CREATE TABLE eq_o ({c})").format(c=sql.SQL(EQ_COLS)))
    db.execute("SELECT notifier.watch('eq_n', channel => 'ob_eq_n', delivery => 'notify')")
    outbox_watch(db, "eq_o", "ob_eq_o")
    add_queue(db, "ob_eq_o")
    w = db.execute("SELECT \"table\", channel, delivery, notify FROM notifier.watches "
                   "WHERE \"table\" IN ('eq_n', 'eq_o') ORDER BY 1").fetchall()
    ctx.check(w == [("eq_n", "ob_eq_n", "notify", True), ("eq_o", "ob_eq_o", "outbox", False)],
              f"notifier.watches: {w}")
    lis = Listener(DB, ["ob_eq_n", "ob_eq_o"])
    try:
        with connect(DB, autocommit=False) as c:
            eq_workload(c, "eq_n")
            eq_workload(c, "eq_o")
        heard = lis.until(lambda ch, p: ch == "ob_eq_n" and is_end(p), ARRIVE, "END on ob_eq_n")
        ctx.check(all(ch == "ob_eq_n" for ch, _, _ in heard),
                  f"the LISTEN client heard the outbox channel: "
                  f"{[short(p) for ch, p, _ in heard if ch != 'ob_eq_n'][:3]}")
        heard = [canon(parse(p)) for ch, p, _ in heard if ch == "ob_eq_n"]
        wait_row_queued(db, "ob_eq_o", "k", "END")
        got = [e for _, e in queued(db, "ob_eq_o")]
        late = lis.collect(0.3)
        ctx.check(not late, f"NOTIFYs after END, or on the outbox channel: {late[:3]}")
    finally:
        lis.close()

    ops = collections.Counter(e.get("op") for e in got)
    ctx.check(ops == EQ_OPS, f"ops in the queue {dict(ops)}, expected {dict(EQ_OPS)}")
    if not ctx.check(len(heard) == len(got), f"LISTEN client heard {len(heard)} events, the "
                                             f"queue holds {len(got)}"):
        for i in range(max(len(heard), len(got))):
            log(f"  #{i + 1}: heard {short(masked(heard[i]) if i < len(heard) else None, 150)}")
            log(f"       queued {short(masked(got[i]) if i < len(got) else None, 150)}")
    refs = 0
    for i, (h, q) in enumerate(zip(heard, got)):
        if isinstance(h, dict) and "ref" in h:
            refs += 1
            # over NOTIFY: envelope + key + ref + truncated; in the queue: whole
            ctx.check(h.get("truncated") is True and "row" not in h,
                      f"event #{i + 1}: reference form expected, heard {short(h)}")
            ctx.check("ref" not in q and "truncated" not in q,
                      f"event #{i + 1}: the queue holds a reference: {short(q)}")
            ctx.check((q.get("row") or {}).get("body") == BIG,
                      f"event #{i + 1}: row.body in the queue is not the 20000-char body: {short(q)}")
            full = canon(parse(db.execute("SELECT notifier.payload(%s)::text",
                                          (int(h["ref"]),)).fetchone()[0]))
            ctx.check(masked(full) == masked(q),
                      f"event #{i + 1}: notifier.payload({h['ref']}) differs from the queued event:\n"
                      f"        payload {short(masked(full), 300)}\n        queued  {short(masked(q), 300)}")
            env = {k: v for k, v in masked(full).items() if k != "row"}
            env.update(ref="R", truncated=True)
            ctx.check(masked(h) == env, f"event #{i + 1}: the reference {short(masked(h))} is not "
                                        f"the envelope and key of {short(masked(full))}")
        else:
            ctx.check(masked(h) == masked(q), f"event #{i + 1} differs:\n"
                                              f"        notify {short(masked(h), 400)}\n"
                                              f"        outbox {short(masked(q), 400)}")
    ctx.check(refs == 1, f"{refs} events were sent as a reference over NOTIFY, expected 1 (the 20 kB row)")
    typed = [e for e in got if (e.get("row") or {}).get("id") == 50]
    ctx.check(typed and typed[0]["row"]["n"] == Decimal("12345.6789")
              and typed[0]["row"]["arr"] == [1, None, 3] and typed[0]["row"]["jb"] == canon(parse(TYPED[1])),
              f"the typed row in the queue: {short(typed[:1], 400)}")
    n_ob = outbox_count(db, "ob_eq_o")
    ctx.check(n_ob == 0, f"{n_ob} events of ob_eq_o left in notifier.outbox")
    log(f"{len(got)} events ({dict(ops)}): notify and outbox delivery equal after masking; "
        f"the 20 kB event a reference over NOTIFY, whole in the queue (= notifier.payload(ref))")


def step_rollback(ctx):
    db = ctx.db
    ch = "ob_rb"
    db.execute("CREATE TABLE rb (id int PRIMARY KEY, v text); "
               "CREATE TABLE rb_u (id int PRIMARY KEY, v text)")
    outbox_watch(db, "rb", ch, notify=True)
    outbox_watch(db, "rb_u", ch, notify=True, dedup=False)
    add_queue(db, ch)
    lis = Listener(DB, [ch])

    def nothing(what):
        time.sleep(1.0)
        n_ob, n_q, heard = outbox_count(db, ch), queue_count(db, ch), lis.collect(0.1)
        ctx.check(n_ob == 0 and n_q == 0 and not heard,
                  f"after {what}: {n_ob} rows in notifier.outbox, {n_q} in notifier.queue, "
                  f"LISTEN client heard {heard[:3]}")

    try:
        with connect(DB, autocommit=False) as c:
            # 1. rolled back, with a savepoint released inside
            c.execute("INSERT INTO rb VALUES (1, 'rolled back')")
            c.execute("INSERT INTO rb_u VALUES (1, 'rolled back')")
            c.execute("SAVEPOINT a")
            c.execute("UPDATE rb_u SET v = 'rolled back too' WHERE id = 1")
            c.execute("RELEASE SAVEPOINT a")
            c.rollback()
            nothing("ROLLBACK")
            # 2. rolled back to a savepoint: only what came before it (and after) stays
            c.execute("INSERT INTO rb VALUES (2, 'kept')")
            c.execute("INSERT INTO rb_u VALUES (2, 'kept')")
            c.execute("SAVEPOINT s")
            c.execute("INSERT INTO rb VALUES (3, 'gone')")
            c.execute("INSERT INTO rb_u VALUES (3, 'gone')")
            c.execute("UPDATE rb SET v = 'gone' WHERE id = 2")
            c.execute("UPDATE rb_u SET v = 'gone' WHERE id = 2")
            c.execute("SAVEPOINT s2")
            c.execute("INSERT INTO rb_u VALUES (4, 'gone')")
            c.execute("ROLLBACK TO SAVEPOINT s")
            c.execute("SAVEPOINT s3")
            c.execute("INSERT INTO rb VALUES (5, 'kept')")
            c.execute("RELEASE SAVEPOINT s3")
            c.commit()
            # 3. only a savepoint's work, then all of it rolled back
            c.execute("SAVEPOINT x")
            c.execute("INSERT INTO rb_u VALUES (6, 'rolled back')")
            c.execute("ROLLBACK TO SAVEPOINT x")
            c.execute("INSERT INTO rb VALUES (6, 'rolled back')")
            c.rollback()
            c.execute("INSERT INTO rb VALUES (7, 'END')")
            c.commit()
        heard = lis.until(lambda _c, p: is_end(p), ARRIVE, "END")
        wait_row_queued(db, ch, "v", "END")
        time.sleep(0.3)
        heard += lis.collect(0.2)
        got = [e for _, e in queued(db, ch)]
    finally:
        lis.close()
    want = sorted([("rb", 2, "kept"), ("rb_u", 2, "kept"), ("rb", 5, "kept"), ("rb", 7, "END")])

    def summary(evs):
        return sorted((e.get("table"), e["row"]["id"], e["row"]["v"]) for e in evs)
    ctx.check(summary(got) == want, f"queue after the rollbacks: {summary(got)}, expected {want}")
    h = [canon(parse(p)) for _, p, _ in heard]
    ctx.check(summary(h) == want, f"LISTEN client after the rollbacks: {summary(h)}, expected {want}")
    ctx.check(all(e.get("op") == "INSERT" for e in got), f"ops: {[e.get('op') for e in got]}")
    n_ob = outbox_count(db, ch)
    ctx.check(n_ob == 0, f"{n_ob} rows left in notifier.outbox")
    log(f"ROLLBACK and ROLLBACK TO SAVEPOINT left nothing; the kept events ({len(got)}) "
        f"arrived once in the queue and at the LISTEN client")


def step_notify(ctx):
    db = ctx.db
    ch = "ob_nt"
    db.execute("CREATE TABLE nt (id int PRIMARY KEY, body text)")
    outbox_watch(db, "nt", ch, notify=True)
    w = db.execute("SELECT delivery, notify FROM notifier.watches WHERE \"table\"::text = 'nt'").fetchall()
    ctx.check(w == [("outbox", True)], f"notifier.watches for nt: {w}")
    add_queue(db, ch)
    big = text_of(10000, 3)
    lis = Listener(DB, [ch])
    try:
        with connect(DB) as c:
            c.execute("INSERT INTO nt VALUES (1, 'one'), (2, 'two'), (3, 'three')")
            c.execute("UPDATE nt SET body = 'TWO' WHERE id = 2")
            c.execute("INSERT INTO nt VALUES (4, %s)", (big,))
            with c.transaction():
                c.execute("DELETE FROM nt WHERE id = 1")
                c.execute("UPDATE nt SET body = 'THREE' WHERE id = 3")
            c.execute("INSERT INTO nt VALUES (5, 'END')")
        n = 8
        heard = lis.until(lambda _c, p: is_end(p), ARRIVE, "END")
        wait_queued(db, ch, n)
        time.sleep(1.0)          # a second copy (the worker hearing its own NOTIFYs) would show now
        heard += lis.collect(0.2)
        rows = queued(db, ch)
    finally:
        lis.close()
    ctx.check(len(heard) == n, f"LISTEN client heard {len(heard)} NOTIFYs, expected {n}: "
                               f"{[short(p, 80) for _, p, _ in heard]}")
    ctx.check(len(rows) == n, f"{len(rows)} events in the queue, expected {n} (each once)")
    wpid = ctx.status()["pid"]
    pids = {pid for _, _, pid in heard}
    ctx.check(pids == {wpid}, f"NOTIFYs sent by pids {pids}, the worker is {wpid}")
    by_id = {e["id"]: e for _, e in rows}
    ctx.check(len(by_id) == len(rows), "duplicate event ids in the queue")
    refs = 0
    for _, p, _ in heard:
        h = canon(parse(p))
        q = by_id.get(h.get("id"))
        if not ctx.check(q is not None, f"heard event {short(h)} is not in the queue"):
            continue
        if "ref" in h:
            refs += 1
            full = canon(parse(db.execute("SELECT notifier.payload(%s)::text",
                                          (int(h["ref"]),)).fetchone()[0]))
            ctx.check(h.get("truncated") is True and full == q and q["row"]["body"] == big,
                      f"reference {short(h)}: notifier.payload() = {short(full)}, queued {short(q)}")
        else:
            ctx.check(h == q, f"heard {short(h, 300)}, queued {short(q, 300)}")
    ctx.check(refs == 1, f"{refs} references heard, expected 1 (the 10 kB row)")
    heard_ids = [canon(parse(p)).get("id") for _, p, _ in heard]
    ctx.check(heard_ids == [e["id"] for _, e in rows],
              "the LISTEN client heard the events in another order than the queue holds them")
    log(f"notify => true: {len(heard)} NOTIFYs from the worker (pid {wpid}), one a reference "
        f"resolved by notifier.payload(); the queue route got each of the {n} events once")


def step_waiting(ctx):
    db = ctx.db
    ch = "ob_wait"
    db.execute("CREATE TABLE wr (id int PRIMARY KEY, v text)")
    outbox_watch(db, "wr", ch)
    db.execute("INSERT INTO wr VALUES (1, 'a'), (2, 'b')")
    db.execute("INSERT INTO wr VALUES (3, 'c')")
    time.sleep(1.5)          # the worker was woken by those commits, and has no route for them
    held = [canon(parse(t)) for (t,) in db.execute(
        "SELECT event::text FROM notifier.outbox WHERE channel = %s ORDER BY id", (ch,)).fetchall()]
    ctx.check(len(held) == 3, f"{len(held)} events of {ch} in notifier.outbox, expected 3")
    st = db.execute("SELECT events, oldest_age, routed FROM notifier.outbox_stats "
                    "WHERE channel = %s", (ch,)).fetchall()
    ctx.check(len(st) == 1 and st[0][0] == 3 and st[0][1] is not None
              and st[0][1] >= datetime.timedelta(seconds=1) and st[0][2] is False,
              f"notifier.outbox_stats for {ch}: {st}, expected (3, >= 1 s, false)")
    ctx.check(queue_count(db, ch) == 0, "events of a channel without route are in the queue")
    log(f"no route: 3 events wait in notifier.outbox; outbox_stats: events {st[0][0] if st else None}, "
        f"oldest_age {st[0][1] if st else None}, routed {st[0][2] if st else None}")
    t0 = time.monotonic()
    add_queue(db, ch)
    wait_queued(db, ch, 3)
    ctx.timing("add_queue -> waiting events in the queue in", f"{time.monotonic() - t0:.3f} s")
    got = [e for _, e in queued(db, ch)]
    ctx.check(got == held, f"queued {short(got, 300)}\n        held {short(held, 300)}")
    wait_for(f"notifier.outbox empty for {ch}", lambda: (outbox_count(db, ch) == 0, None), 10)
    st = db.execute("SELECT count(*) FROM notifier.outbox_stats WHERE channel = %s", (ch,)).fetchone()[0]
    ctx.check(st == 0, f"notifier.outbox_stats still has a row for {ch}")


def step_long(ctx):
    db = ctx.db
    ch = "ob_long"
    db.execute("CREATE TABLE lr (id int PRIMARY KEY, who text); "
               "CREATE TABLE lr_c (id int PRIMARY KEY, who text)")
    outbox_watch(db, "lr", ch, dedup=False)     # written when the change is made
    outbox_watch(db, "lr_c", ch)                          # written at commit
    add_queue(db, ch)
    t1 = connect(DB, autocommit=False)
    try:
        seq0 = db.execute("SELECT last_value FROM notifier.outbox_id_seq").fetchone()[0]
        t1.execute("INSERT INTO lr SELECT g, 'T1' FROM generate_series(1, 3) g")
        t1.execute("INSERT INTO lr_c VALUES (1, 'T1')")
        seq1 = db.execute("SELECT last_value FROM notifier.outbox_id_seq").fetchone()[0]
        ctx.check(seq1 >= seq0 + 3, f"T1 took no outbox ids (outbox_id_seq {seq0} -> {seq1}): "
                                    "the uncoalesced rows were not written yet")
        lat = []
        others = 0
        for rnd in range(5):
            for k in range(3):
                with connect(DB) as c:
                    i = 100 + rnd * 10 + k
                    t0 = time.monotonic()
                    with c.transaction():
                        c.execute("INSERT INTO lr VALUES (%s, 'other')", (i,))
                        c.execute("INSERT INTO lr_c VALUES (%s, 'other')", (i,))
                    others += 2
                    wait_queued(db, ch, others)
                    lat.append(time.monotonic() - t0)
        ctx.timing("while T1 is open, events of other sessions in the queue after",
                   f"median {sorted(lat)[len(lat) // 2] * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
        if max(lat) > 5:
            ctx.note(f"an event of another session took {max(lat):.1f} s while T1 was open: "
                     "the periodic look, rather than the wake-up at commit?")
        ctx.check(outbox_count(db, ch) == 0, "notifier.outbox shows T1's uncommitted rows")
        t1.commit()
        wait_queued(db, ch, others + 4)
    finally:
        t1.close()
    rows = queued(db, ch)
    keys = collections.Counter((e["table"], e["row"]["id"]) for _, e in rows)
    dup = [k for k, c in keys.items() if c > 1]
    ctx.check(not dup, f"events queued more than once: {dup[:5]}")
    t1_rows = [(q, e) for q, e in rows if e["row"]["who"] == "T1"]
    ctx.check(sorted(e["row"]["id"] for _, e in t1_rows if e["table"] == "lr") == [1, 2, 3]
              and [e["row"]["id"] for _, e in t1_rows if e["table"] == "lr_c"] == [1],
              f"T1's events in the queue: {[(e['table'], e['row']['id']) for _, e in t1_rows]}")
    last_other = max(q for q, e in rows if e["row"]["who"] == "other")
    t1c = [q for q, e in t1_rows if e["table"] == "lr_c"]
    ctx.check(t1c and t1c[0] > last_other,
              "T1's coalesced event (written at its commit, after the others committed) is "
              "queued before another session's event")
    ns = [int(e["id"].split(".")[1]) for _, e in sorted(t1_rows)]
    ctx.check(ns == sorted(ns) and len(set(e["xid"] for _, e in t1_rows)) == 1,
              f"T1's events out of order: ids {[e['id'] for _, e in t1_rows]}")
    log(f"{others} events of other sessions arrived while T1 was open; T1's 4 events after its "
        "commit; each exactly once")


def step_order(ctx):
    db = ctx.db
    # 1. one session, 1000 single-row transactions
    db.execute("CREATE TABLE ord1 (seq int PRIMARY KEY)")
    outbox_watch(db, "ord1", "ob_ord1", payload="keys")
    add_queue(db, "ob_ord1")
    t0 = time.monotonic()
    with connect(DB) as c:
        for i in range(1, 1001):
            c.execute("INSERT INTO ord1 VALUES (%s)", (i,))
    t_prod = time.monotonic() - t0
    wait_queued(db, "ob_ord1", 1000)
    ctx.timing("1000 single-row transactions: all in the queue", f"{time.monotonic() - t0:.2f} s "
               f"after the first (producing took {t_prod:.2f} s)")
    seqs = [e["key"]["seq"] for _, e in queued(db, "ob_ord1")]
    bad = [(i + 1, s) for i, s in enumerate(seqs) if s != i + 1]
    ctx.check(not bad, f"queue order differs from commit order at (position, seq) {bad[:5]}")

    # 2. 4 concurrent producers, transactions of 3 events
    db.execute("CREATE TABLE ord2 (p int, t int, j int, PRIMARY KEY (p, t, j)); "
               "CREATE TABLE ord2_u (p int, t int, j int, PRIMARY KEY (p, t, j))")
    outbox_watch(db, "ord2", "ob_ord2", payload="keys")
    outbox_watch(db, "ord2_u", "ob_ord2", payload="keys", dedup=False)
    add_queue(db, "ob_ord2")
    PRODUCERS, TXNS = 4, 150

    def producer(p):
        with connect(DB, autocommit=False) as c:
            for t in range(TXNS):
                tab = ident("ord2_u" if (p + t) % 3 == 0 else "ord2")
                for j in (1, 2, 3):
                    c.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(tab), (p, t, j))
                c.commit()

    th = Threads("producer")
    for p in range(PRODUCERS):
        th.start(producer, p)
    th.join(90)
    n = PRODUCERS * TXNS * 3
    wait_queued(db, "ob_ord2", n)
    rows = queued(db, "ob_ord2")
    by_xid = collections.defaultdict(list)
    last_t = {}
    regress = []
    for _, e in rows:
        k = e["key"]
        by_xid[e["xid"]].append((int(e["id"].split(".")[1]), k["p"], k["t"], k["j"]))
        if k["j"] == 1:
            if k["t"] <= last_t.get(k["p"], -1):
                regress.append((k["p"], last_t[k["p"]], k["t"]))
            last_t[k["p"]] = k["t"]
    ctx.check(len(by_xid) == PRODUCERS * TXNS,
              f"{len(by_xid)} transactions (xids) in the queue, expected {PRODUCERS * TXNS}")
    bad = [(x, v) for x, v in by_xid.items()
           if [a[0] for a in v] != [1, 2, 3] or [a[3] for a in v] != [1, 2, 3]
           or len({(a[1], a[2]) for a in v}) != 1]
    ctx.check(not bad, f"{len(bad)} transactions whose events are not n = 1, 2, 3 / j = 1, 2, 3 "
                       f"in queue order, e.g. {bad[:3]}")
    ctx.check(not regress, f"a producer's transactions arrived out of its commit order "
                           f"(producer, earlier t, later t): {regress[:5]}")
    inter = sum(1 for i in range(1, len(rows)) if rows[i][1]["xid"] != rows[i - 1][1]["xid"]) + 1
    log(f"{PRODUCERS} producers x {TXNS} transactions x 3 events: each transaction's events in "
        f"order, each producer's transactions in commit order ({inter} runs of one xid for "
        f"{len(by_xid)} transactions: {'interleaved' if inter > len(by_xid) else 'contiguous'})")

    # 3. causal chain: each step written only after the previous one was seen committed
    db.execute("CREATE TABLE chain_a (step int PRIMARY KEY); CREATE TABLE chain_b (step int PRIMARY KEY)")
    outbox_watch(db, "chain_a", "ob_chain", payload="keys")
    outbox_watch(db, "chain_b", "ob_chain", payload="keys", dedup=False)
    add_queue(db, "ob_chain")
    STEPS = 200

    def player(mine, other, parity):
        with connect(DB) as c:
            for step in range(parity, STEPS + 1, 2):
                if step > 1:
                    deadline = time.monotonic() + 30
                    while not c.execute(sql.SQL("SELECT 1 FROM {} WHERE step = %s").format(ident(other)),
                                        (step - 1,)).fetchone():
                        if time.monotonic() > deadline:
                            raise TestFailure(f"step {step - 1} not seen")
                        time.sleep(0.0005)
                c.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(ident(mine)), (step,))

    th = Threads("chain")
    th.start(player, "chain_a", "chain_b", 1)
    th.start(player, "chain_b", "chain_a", 2)
    th.join(60)
    wait_queued(db, "ob_chain", STEPS)
    steps = [e["key"]["step"] for _, e in queued(db, "ob_chain")]
    bad = [(i + 1, s) for i, s in enumerate(steps) if s != i + 1]
    ctx.check(not bad, f"causal chain out of order at (position, step) {bad[:5]}")
    log(f"causal chain of {STEPS} steps (two sessions, coalesced and not) queued in chain order")


def step_stats(ctx):
    db = ctx.db
    ch = "ob_stats"
    db.execute("CREATE TABLE st (id int PRIMARY KEY); "
               "CREATE TABLE st_q (qid bigserial PRIMARY KEY, channel text NOT NULL, "
               "payload jsonb NOT NULL, received_at timestamptz)")
    outbox_watch(db, "st", ch)
    rid = add_queue(db, ch, "st_q")
    before = db.execute("SELECT outbox_written FROM notifier.capture_stats()").fetchone()[0]
    db.execute("INSERT INTO st SELECT generate_series(1, 5)")
    after = db.execute("SELECT outbox_written FROM notifier.capture_stats()").fetchone()[0]
    ctx.check(after - before >= 5, f"capture_stats().outbox_written {before} -> {after} for 5 events")
    wait_queued(db, ch, 5, table="st_q")
    cur = db.cursor(row_factory=dict_row)
    s = cur.execute("SELECT * FROM notifier.stats WHERE route_id = %s", (rid,)).fetchone()
    ctx.check(s is not None and "outbox_events" in s and "outbox_oldest_age" in s,
              f"notifier.stats lacks outbox_events/outbox_oldest_age: {s}")
    if s is not None:
        ctx.check(s.get("outbox_events") == 0 and s.get("outbox_oldest_age", 0) is None,
                  f"empty outbox: notifier.stats outbox_events {s.get('outbox_events')!r}, "
                  f"outbox_oldest_age {s.get('outbox_oldest_age')!r}, expected 0 / NULL")
        ctx.check(s["received"] == 5 and s["written"] == 5 and s["errors"] == 0,
                  f"route stats: received {s['received']}, written {s['written']}, errors {s['errors']}")
    log(f"capture_stats().outbox_written {before} -> {after}; stats of the route with an empty "
        f"outbox: outbox_events {s and s.get('outbox_events')}, outbox_oldest_age "
        f"{s and s.get('outbox_oldest_age')}")

    # the route's queue table locked: the worker waits, the events stay visible in the outbox
    locker = connect(DB, autocommit=False)
    try:
        locker.execute("LOCK TABLE st_q IN ACCESS EXCLUSIVE MODE")
        db.execute("INSERT INTO st SELECT generate_series(6, 8)")
        wpid = ctx.status()["pid"]
        wait_for("the worker waiting for the lock on st_q",
                 lambda: (lambda r: (r is not None and r[0] == "Lock", r))(db.execute(
                     "SELECT wait_event_type, wait_event, query FROM pg_stat_activity "
                     "WHERE pid = %s", (wpid,)).fetchone()), 20)
        time.sleep(0.2)
        s = cur.execute("SELECT outbox_events, outbox_oldest_age FROM notifier.stats "
                        "WHERE route_id = %s", (rid,)).fetchone()
        ob = db.execute("SELECT events, routed FROM notifier.outbox_stats WHERE channel = %s",
                        (ch,)).fetchone()
        ctx.check(s["outbox_events"] == 3 and s["outbox_oldest_age"] is not None
                  and s["outbox_oldest_age"] >= datetime.timedelta(seconds=0.2),
                  f"3 events waiting for the worker: notifier.stats outbox_events "
                  f"{s['outbox_events']}, outbox_oldest_age {s['outbox_oldest_age']}")
        ctx.check(ob == (3, True), f"notifier.outbox_stats for {ch}: {ob}, expected (3, true)")
        log(f"queue table locked: stats outbox_events {s['outbox_events']}, outbox_oldest_age "
            f"{s['outbox_oldest_age']}; outbox_stats {ob}")
    finally:
        locker.rollback()
        locker.close()
    wait_queued(db, ch, 8, table="st_q")
    s = cur.execute("SELECT outbox_events, outbox_oldest_age, written FROM notifier.stats "
                    "WHERE route_id = %s", (rid,)).fetchone()
    ctx.check(s["outbox_events"] == 0 and s["outbox_oldest_age"] is None and s["written"] == 8,
              f"after the lock was released: {s}")


def step_bad(ctx):
    db = ctx.db
    db.execute("CREATE TABLE bad_t (id int PRIMARY KEY)")
    E = lambda what, q, codes, need=(): expect_error(ctx, db, what, q, need=need, codes=codes)  # noqa: E731
    E("watch(delivery => 'bogus')", "SELECT notifier.watch('bad_t', delivery => 'bogus')",
      ("22023",), need=[["delivery"], ["bogus"], ["notify"], ["outbox"]])
    E("watch(delivery => 'OUTBOX ')", "SELECT notifier.watch('bad_t', delivery => 'OUTBOX ')",
      ("22023",), need=[["delivery"]])
    E("watch(notify => true)", "SELECT notifier.watch('bad_t', notify => true)",
      ("22023",), need=[["notify"], ["outbox"]])
    E("watch(delivery => 'notify', notify => false)",
      "SELECT notifier.watch('bad_t', delivery => 'notify', notify => false)",
      ("22023",), need=[["notify"], ["outbox"]])
    n = db.execute("SELECT count(*) FROM notifier.watches WHERE \"table\"::text = 'bad_t'").fetchone()[0]
    ctx.check(n == 0, f"the failed watch() calls left {n} watches on bad_t")
    db.execute("INSERT INTO bad_t VALUES (1)")
    ctx.check(outbox_count(db, "bad_t") == 0, "bad_t wrote to the outbox")


STEPS = [
    Step("equal", "notify vs outbox delivery of the same workload", step_equal),
    Step("rollback", "ROLLBACK / ROLLBACK TO SAVEPOINT", step_rollback),
    Step("notify", "notify => true with a queue route on the channel", step_notify),
    Step("waiting", "events waiting for a route", step_waiting),
    Step("long", "a long-running transaction holding outbox rows", step_long),
    Step("order", "delivery order", step_order),
    Step("stats", "capture_stats, notifier.stats, outbox_stats", step_stats),
    Step("bad", "bad watch() options", step_bad),
]


if __name__ == "__main__":
    run_worker_test(NAME, STEPS, Ctx(), DB, before_worker=lambda db: db.execute(
        "SET lock_timeout = '20s'"), timeout=TIMEOUT)
