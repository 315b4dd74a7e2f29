#!/usr/bin/python3
"""Integration test of pg_notifier's capture half, with a real LISTEN client.

One connection LISTENs, another runs a mixed workload on watched tables; every
NOTIFY payload is checked against the event format of DESIGN.md:

  * it is JSON, with its keys in the order of the spec;
  * op / schema / table / key / row / old / changed are right, and "row" equals
    to_jsonb() of the table row (as the database itself computed it, with
    RETURNING, at that moment) minus the excluded columns;
  * id is "<xid>.<seq>", unique, and xid is the full id of the transaction that
    made the change (pg_current_xact_id());
  * exactly the expected events arrive: nothing for no-op updates, rolled-back
    transactions, rolled-back savepoints, or changes that coalesce to nothing;
  * an oversize event arrives as {"ref":N,"truncated":true} and
    notifier.payload(N) returns the full event.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER...); creates and
drops its own database.  Run it with Debian's python3 (psycopg 3.1).
"""

import datetime
import os
import re
import signal
import sys

import psycopg
from psycopg import sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import (Checks, Listener, Step, TestFailure, canon, drop_databases, log, main,  # noqa: E402
                   new_database, parse, short, text_of)

NAME = "test_capture"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "120"))
DBNAME = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_capture")
DONE_CHANNEL = "pg_notifier_it_done"
NOTIFY_LIMIT = 8000

BASE_KEYS = ["id", "op", "schema", "table", "xid", "ts"]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00$")
ID_RE = re.compile(r"^(\d+)\.(\d+)$")
SHORT = 300         # characters of a value in a message


def parse_event(text):
    """JSON -> Python keeping key order (a key twice is not JSON); numbers exact."""
    return parse(text, unique_keys=True)


class Table:
    def __init__(self, schema, name, key=(), exclude=(), payload="row", channel=None,
                 columns=None):
        self.schema = schema
        self.columns = columns      # column order, needed for "changed" in diff mode
        self.name = name
        self.key = list(key)
        self.exclude = set(exclude)
        self.payload = payload
        self.channel = channel or name

    @property
    def ident(self):
        return sql.Identifier(self.schema, self.name)

    def project(self, row):
        return {k: v for k, v in row.items() if k not in self.exclude}

    def key_of(self, row):
        return {k: row[k] for k in self.key}


class Expected:
    def __init__(self, table, op, key=None, row=None, old=None, changed=None,
                 oversize=False):
        self.table = table
        self.op = op
        self.key = key
        self.row = row
        self.old = old
        self.changed = changed
        self.oversize = oversize
        self.xid = None
        self.step = None

    def keys(self):
        ks = list(BASE_KEYS)
        if self.op == "TRUNCATE":
            return ks
        if self.table.key:
            ks.append("key")
        if self.table.payload == "keys":
            return ks
        ks.append("row")
        if self.op == "UPDATE" and self.table.payload in ("full", "diff"):
            ks.append("old")
        if self.op == "UPDATE" and self.table.payload == "diff":
            ks.append("changed")
        return ks

    def describe(self):
        k = f" key={short(self.key, 80)}" if self.key is not None else ""
        return f"{self.op} {self.table.schema}.{self.table.name}{k} (step {self.step!r})"


class Workload:
    """Runs steps, one transaction each, and records the events they must send."""

    def __init__(self, conn):
        self.conn = conn
        self.expected = []
        self.xids = {}        # xid -> step name
        self.step = None
        self.pending = []

    def begin(self, step):
        self.step = step
        self.pending = []

    def rows(self, query, params=None):
        """Run a statement whose only output column is to_jsonb(...)::text."""
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            if cur.description is None:
                return []
            return [parse_event(r[0]) for r in cur.fetchall()]

    def one(self, query, params=None):
        rs = self.rows(query, params)
        if len(rs) != 1:
            raise TestFailure(f"step {self.step!r}: expected 1 row from {query!r}, got {len(rs)}")
        return rs[0]

    def exec(self, query, params=None):
        with self.conn.cursor() as cur:
            cur.execute(query, params)

    def expect(self, table, op, row=None, old=None, oversize=False):
        """Expected event; row = full to_jsonb row (new row, old row for DELETE)."""
        key = table.key_of(row) if (table.key and row is not None) else None
        e_row = e_old = changed = None
        if op != "TRUNCATE" and table.payload != "keys":
            if op == "UPDATE" and table.payload == "diff":
                new_p, old_p = table.project(row), table.project(old)
                # to_jsonb() sorts its keys; "changed" follows the table's column order
                changed = [c for c in table.columns
                           if c in new_p and canon(new_p[c]) != canon(old_p.get(c))]
                e_row = {c: new_p[c] for c in changed}
                e_old = {c: old_p[c] for c in changed}
            else:
                e_row = table.project(row)
                if op == "UPDATE" and table.payload == "full":
                    e_old = table.project(old)
        e = Expected(table, op, key, e_row, e_old, changed, oversize)
        e.step = self.step
        self.pending.append(e)

    def commit(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_current_xact_id()::text")
            xid = cur.fetchone()[0]
        self.conn.commit()
        for e in self.pending:
            e.xid = xid
        self.expected.extend(self.pending)
        self.xids[xid] = self.step
        self.pending = []

    def rollback(self):
        self.conn.rollback()
        self.pending = []


def run_workload(w, T):
    items, nokey, odd, big, diffed = T["items"], T["nokey"], T["odd"], T["big"], T["diffed"]
    fullt, keyst = T["fullt"], T["keyst"]

    # 1. multi-row insert
    w.begin("insert items 1-3")
    for r in w.rows("""
            INSERT INTO items AS t (id, name, qty, price, tags, meta, secret, flag) VALUES
              (1, 'one',   1, 12.50, ARRAY['a','b'], '{"n":1,"deep":{"x":[1,2]}}', 's1', true),
              (2, 'two',   2, 0.10,  '{}',           '[]',                          's2', false),
              (3, 'thr"ee\\u', 3, NULL, NULL,         'null',                        's3', NULL)
            RETURNING to_jsonb(t)::text"""):
        w.expect(items, "INSERT", r)
    w.commit()

    # 2. table without a primary key: no "key"
    w.begin("insert nokey")
    for r in w.rows("INSERT INTO nokey AS t VALUES (1, 'a'), (2, 'b') RETURNING to_jsonb(t)::text"):
        w.expect(nokey, "INSERT", r)
    w.commit()

    # 3. a real update
    w.begin("update items 1")
    r = w.one("UPDATE items AS t SET qty = qty + 5, tags = array_append(tags, 'x') "
              "WHERE id = 1 RETURNING to_jsonb(t)::text")
    w.expect(items, "UPDATE", r)
    w.commit()

    # 4. no-op update: sends nothing
    w.begin("no-op update items 2")
    w.exec("UPDATE items SET name = name, price = price WHERE id = 2")
    w.commit()

    # 5. update of an excluded column only: no watched column changed, nothing sent
    w.begin("update excluded column only")
    w.exec("UPDATE items SET secret = 'changed' WHERE id = 2")
    w.commit()

    # 6. rolled-back transaction: nothing
    w.begin("rolled back")
    w.exec("INSERT INTO items (id, name) VALUES (4, 'rolled back')")
    w.exec("UPDATE items SET qty = 1000 WHERE id = 1")
    w.exec("DELETE FROM items WHERE id = 3")
    w.rollback()

    # 7. savepoints: the rolled-back one never shows, the released one does
    w.begin("savepoints")
    r5 = w.one("INSERT INTO items AS t (id, name, qty) VALUES (5, 'five', 5) RETURNING to_jsonb(t)::text")
    w.expect(items, "INSERT", r5)
    w.exec("SAVEPOINT s1")
    w.exec("INSERT INTO items (id, name) VALUES (6, 'never')")
    w.exec("UPDATE items SET qty = 99 WHERE id = 5")
    w.exec("DELETE FROM items WHERE id = 3")
    w.exec("INSERT INTO nokey VALUES (99, 'never')")
    w.exec("ROLLBACK TO SAVEPOINT s1")
    w.exec("SAVEPOINT s2")
    r2 = w.one("UPDATE items AS t SET qty = 7 WHERE id = 2 RETURNING to_jsonb(t)::text")
    w.expect(items, "UPDATE", r2)
    w.exec("RELEASE SAVEPOINT s2")
    w.commit()

    # 8. coalescing: INSERT ... UPDATE -> INSERT of the final row
    w.begin("insert+update coalesced")
    w.exec("INSERT INTO items (id, name, qty) VALUES (7, 'seven', 0)")
    r = w.one("UPDATE items AS t SET name = 'SEVEN', qty = 77 WHERE id = 7 RETURNING to_jsonb(t)::text")
    w.expect(items, "INSERT", r)
    w.commit()

    # 9. coalescing: INSERT ... DELETE -> nothing
    w.begin("insert+delete coalesced")
    w.exec("INSERT INTO items (id, name) VALUES (8, 'gone')")
    w.exec("DELETE FROM items WHERE id = 8")
    w.commit()

    # 10. coalescing: UPDATE ... UPDATE back to the same values -> nothing
    w.begin("update+update back")
    w.exec("UPDATE items SET qty = qty + 1 WHERE id = 3")
    w.exec("UPDATE items SET qty = qty - 1 WHERE id = 3")
    w.commit()

    # 11. change of key: DELETE of the old key, INSERT of the new one
    w.begin("key change")
    old = w.one("SELECT to_jsonb(t)::text FROM items t WHERE id = 2")
    new = w.one("UPDATE items AS t SET id = 100 WHERE id = 2 RETURNING to_jsonb(t)::text")
    w.expect(items, "DELETE", old)
    w.expect(items, "INSERT", new)
    w.commit()

    # 12. delete: "row" is the old row
    w.begin("delete items 3")
    r = w.one("DELETE FROM items AS t WHERE id = 3 RETURNING to_jsonb(t)::text")
    w.expect(items, "DELETE", r)
    w.commit()

    # 13. no key: update (and a no-op update) then delete
    w.begin("nokey update")
    r = w.one("UPDATE nokey AS t SET b = 'bb' WHERE a = 2 RETURNING to_jsonb(t)::text")
    w.expect(nokey, "UPDATE", r)
    w.exec("UPDATE nokey SET b = b WHERE a = 1")
    w.commit()

    w.begin("nokey delete")
    r = w.one("DELETE FROM nokey AS t WHERE a = 1 RETURNING to_jsonb(t)::text")
    w.expect(nokey, "DELETE", r)
    w.commit()

    # 14. truncate
    w.begin("truncate nokey")
    w.exec("TRUNCATE nokey")
    w.expect(nokey, "TRUNCATE")
    w.commit()

    # 15. several tables in one transaction
    w.begin("multi-table")
    r9 = w.one("INSERT INTO items AS t (id, name, meta) VALUES (9, 'nine', '{\"k\":[true,null]}') "
               "RETURNING to_jsonb(t)::text")
    w.expect(items, "INSERT", r9)
    r = w.one("INSERT INTO nokey AS t VALUES (3, 'c') RETURNING to_jsonb(t)::text")
    w.expect(nokey, "INSERT", r)
    r1 = w.one("UPDATE items AS t SET price = 1.5 WHERE id = 1 RETURNING to_jsonb(t)::text")
    w.expect(items, "UPDATE", r1)
    w.commit()

    # 16. mixed-case, quoted identifiers (schema, table, columns, channel)
    w.begin("quoted insert")
    for r in w.rows("""INSERT INTO "Mixed Schema"."Odd Table" AS t VALUES
                         (1, 'x', 1), (2, 'y', 2) RETURNING to_jsonb(t)::text"""):
        w.expect(odd, "INSERT", r)
    w.commit()
    w.begin("quoted update")
    r = w.one("""UPDATE "Mixed Schema"."Odd Table" AS t SET "Some Col" = 'X''s'
                 WHERE "Id" = 1 RETURNING to_jsonb(t)::text""")
    w.expect(odd, "UPDATE", r)
    w.commit()
    w.begin("quoted delete")
    r = w.one("""DELETE FROM "Mixed Schema"."Odd Table" AS t WHERE "Id" = 2
                 RETURNING to_jsonb(t)::text""")
    w.expect(odd, "DELETE", r)
    w.commit()

    # 17. oversize rows: sent as a reference, resolved with notifier.payload()
    w.begin("oversize insert")
    r = w.one("INSERT INTO big AS t VALUES (1, %s) RETURNING to_jsonb(t)::text",
              (text_of(9000, 1),))
    w.expect(big, "INSERT", r, oversize=True)
    w.commit()
    w.begin("small insert in big")
    r = w.one("INSERT INTO big AS t VALUES (2, 'small') RETURNING to_jsonb(t)::text")
    w.expect(big, "INSERT", r)
    w.commit()
    w.begin("oversize update")
    r = w.one("UPDATE big AS t SET body = body || 'y' WHERE id = 1 RETURNING to_jsonb(t)::text")
    w.expect(big, "UPDATE", r, oversize=True)
    w.commit()
    w.begin("oversize delete")
    r = w.one("DELETE FROM big AS t WHERE id = 1 RETURNING to_jsonb(t)::text")
    w.expect(big, "DELETE", r, oversize=True)
    w.commit()

    # 18. payload => 'diff'
    w.begin("diff insert")
    r = w.one("""INSERT INTO diffed AS t VALUES (1, 10, 'b', '{"k":1}') RETURNING to_jsonb(t)::text""")
    w.expect(diffed, "INSERT", r)
    w.commit()
    w.begin("diff update")
    old = w.one("SELECT to_jsonb(t)::text FROM diffed t WHERE id = 1")
    new = w.one("""UPDATE diffed AS t SET a = 11, c = '{"k":2}', b = b WHERE id = 1
                   RETURNING to_jsonb(t)::text""")
    w.expect(diffed, "UPDATE", new, old=old)
    w.commit()
    w.begin("diff delete")
    r = w.one("DELETE FROM diffed AS t WHERE id = 1 RETURNING to_jsonb(t)::text")
    w.expect(diffed, "DELETE", r)
    w.commit()

    # 19. payload => 'full': UPDATE also carries the whole old row
    w.begin("full insert")
    r = w.one("INSERT INTO fullt AS t VALUES (1, 'x', 1) RETURNING to_jsonb(t)::text")
    w.expect(fullt, "INSERT", r)
    w.commit()
    w.begin("full update")
    old = w.one("SELECT to_jsonb(t)::text FROM fullt t WHERE id = 1")
    new = w.one("UPDATE fullt AS t SET b = 2 WHERE id = 1 RETURNING to_jsonb(t)::text")
    w.expect(fullt, "UPDATE", new, old=old)
    w.commit()

    # 20. payload => 'keys': the key only
    for step, q in (("keys insert", "INSERT INTO keyst AS t VALUES (1, 'x') RETURNING to_jsonb(t)::text"),
                    ("keys update", "UPDATE keyst AS t SET a = 'y' WHERE id = 1 RETURNING to_jsonb(t)::text"),
                    ("keys delete", "DELETE FROM keyst AS t WHERE id = 1 RETURNING to_jsonb(t)::text")):
        w.begin(step)
        r = w.one(q)
        w.expect(keyst, step.split()[1].upper(), r)
        w.commit()


def check_envelope_keys(ev, e, errors, where):
    ks = list(ev.keys())
    prefix = BASE_KEYS + (["key"] if e.table.key else [])
    if ks[:len(prefix)] != prefix or ks[-2:] != ["ref", "truncated"]:
        errors.append(f"{where}: oversize envelope keys {ks}, expected {prefix} + ... + ['ref', 'truncated']")
    for k in ("row", "old", "changed"):
        if k in ev:
            errors.append(f"{where}: oversize envelope carries {k!r}")
    if ev.get("truncated") is not True:
        errors.append(f"{where}: \"truncated\" is {ev.get('truncated')!r}, expected true")
    if not isinstance(ev.get("ref"), int) or isinstance(ev.get("ref"), bool):
        errors.append(f"{where}: \"ref\" is {ev.get('ref')!r}, expected an integer")


def check_event(ev, e, errors, where):
    """Compare a full event with an Expected; append messages to errors."""
    ks = list(ev.keys())
    if ks != e.keys():
        errors.append(f"{where}: keys {ks}, expected {e.keys()}")
    for k, want in (("op", e.op), ("schema", e.table.schema), ("table", e.table.name),
                    ("xid", e.xid)):
        if ev.get(k) != want:
            errors.append(f"{where}: {k} = {ev.get(k)!r}, expected {want!r}")
    if e.key is not None and canon(ev.get("key")) != canon(e.key):
        errors.append(f"{where}: key = {short(ev.get('key'), SHORT)}, expected {short(e.key, SHORT)}")
    if e.row is not None and canon(ev.get("row")) != canon(e.row):
        errors.append(f"{where}: row differs\n      got:      {short(ev.get('row'), 600)}\n"
                      f"      expected: {short(e.row, 600)}")
    if e.old is not None and canon(ev.get("old")) != canon(e.old):
        errors.append(f"{where}: old = {short(ev.get('old'), SHORT)}, expected {short(e.old, SHORT)}")
    if e.changed is not None and ev.get("changed") != e.changed:
        errors.append(f"{where}: changed = {ev.get('changed')!r}, expected {e.changed!r}")
    for part in ("key", "row", "old"):
        if isinstance(ev.get(part), dict):
            leaked = e.table.exclude & set(ev[part])
            if leaked:
                errors.append(f"{where}: excluded column(s) {sorted(leaked)} appear in {part!r}")


def check_common(ev, errors, where, t_lo, t_hi):
    m = ID_RE.match(ev.get("id", "")) if isinstance(ev.get("id"), str) else None
    if not m:
        errors.append(f"{where}: id {ev.get('id')!r} is not '<xid>.<seq>'")
    else:
        if m.group(1) != ev.get("xid"):
            errors.append(f"{where}: id {ev['id']!r} does not start with xid {ev.get('xid')!r}")
        if int(m.group(2)) < 1:
            errors.append(f"{where}: sequence in id {ev['id']!r} is < 1")
    if not isinstance(ev.get("xid"), str) or not ev["xid"].isdigit():
        errors.append(f"{where}: xid {ev.get('xid')!r} is not a string of digits")
    ts = ev.get("ts")
    if not isinstance(ts, str) or not TS_RE.match(ts):
        errors.append(f"{where}: ts {ts!r} is not ISO 8601 UTC with +00:00")
    else:
        t = datetime.datetime.fromisoformat(ts)
        if not (t_lo - datetime.timedelta(minutes=5) <= t <= t_hi + datetime.timedelta(minutes=5)):
            errors.append(f"{where}: ts {ts} is not within the test's run time ({t_lo} .. {t_hi})")


TABLES = {
    "items": Table("public", "items", key=["id"], exclude=["secret"]),
    "nokey": Table("public", "nokey"),
    "odd": Table("Mixed Schema", "Odd Table", key=["Id"]),
    "big": Table("public", "big", key=["id"]),
    "diffed": Table("public", "diffed", key=["id"], payload="diff",
                    columns=["id", "a", "b", "c"]),
    "fullt": Table("public", "fullt", key=["id"], payload="full"),
    "keyst": Table("public", "keyst", key=["id"], payload="keys", channel="keys_only"),
}


def setup(ctx):
    admin = ctx.connect("postgres")
    new_database(admin, DBNAME)
    log(f"database {DBNAME} created")

    ctx.db = db = ctx.connect(DBNAME)
    db.execute("CREATE EXTENSION IF NOT EXISTS pg_notifier")
    db.execute("""
        CREATE TABLE items (id int PRIMARY KEY, name text, qty int, price numeric(10,2),
                            tags text[], meta jsonb, secret text,
                            created timestamptz NOT NULL DEFAULT now(), flag boolean);
        CREATE TABLE nokey (a int, b text);
        CREATE SCHEMA "Mixed Schema";
        CREATE TABLE "Mixed Schema"."Odd Table" ("Id" int PRIMARY KEY, "Some Col" text, lower int);
        CREATE TABLE big (id int PRIMARY KEY, body text);
        CREATE TABLE diffed (id int PRIMARY KEY, a int, b text, c jsonb);
        CREATE TABLE fullt (id int PRIMARY KEY, a text, b int);
        CREATE TABLE keyst (id int PRIMARY KEY, a text);
    """)
    watches = [
        ("SELECT notifier.watch('items', exclude => ARRAY['secret'])", "items"),
        ("SELECT notifier.watch('nokey')", "nokey"),
        ("""SELECT notifier.watch('"Mixed Schema"."Odd Table"')""", "Odd Table"),
        ("SELECT notifier.watch('big')", "big"),
        ("SELECT notifier.watch('diffed', payload => 'diff')", "diffed"),
        ("SELECT notifier.watch('fullt', payload => 'full')", "fullt"),
        ("SELECT notifier.watch('keyst', channel => 'keys_only', payload => 'keys')", "keys_only"),
    ]
    for q, want in watches:
        got = db.execute(q).fetchone()[0]
        if got != want:
            raise TestFailure(f"{q} returned channel {got!r}, expected {want!r}")
    log("tables created and watched")


def cleanup(ctx):
    """Drop the database (kept after a failure when PG_NOTIFIER_TEST_KEEP_DB is set)."""
    if ctx.errors and os.environ.get("PG_NOTIFIER_TEST_KEEP_DB") is not None:
        log(f"database {DBNAME} kept (PG_NOTIFIER_TEST_KEEP_DB is set)")
        return []
    return drop_databases(None, [DBNAME])


def step_events(ctx):
    T, setup = TABLES, ctx.db
    lis = Listener(DBNAME, sorted({t.channel for t in T.values()} | {DONE_CHANNEL}))
    try:
        check_events(ctx, T, setup, lis)
    finally:
        lis.close()


def check_events(ctx, T, setup, lis):
    work = ctx.connect(DBNAME, autocommit=False)
    work_pid = work.info.backend_pid
    t_lo = setup.execute("SELECT clock_timestamp()").fetchone()[0]

    w = Workload(work)
    run_workload(w, T)
    work.autocommit = True
    work.execute("SELECT pg_notify(%s, 'END')", (DONE_CHANNEL,))
    t_hi = setup.execute("SELECT clock_timestamp()").fetchone()[0]
    log(f"workload done: {len(w.xids)} transactions committed, {len(w.expected)} events expected")

    received = [n for n in lis.until(lambda ch, p: ch == DONE_CHANNEL and p == "END", 60,
                                     f"END on {DONE_CHANNEL!r}")
                if n.channel != DONE_CHANNEL]
    signal.alarm(TIMEOUT)  # fresh budget for the checks
    log(f"received {len(received)} notifications")

    errors = []
    by_table = {(t.schema, t.name): t for t in T.values()}
    events = []
    for i, n in enumerate(received):
        where = f"notification #{i + 1} on {n.channel!r}"
        if n.pid != work_pid:
            errors.append(f"{where}: sent by pid {n.pid}, expected the workload backend {work_pid}")
        if len(n.payload.encode()) >= NOTIFY_LIMIT:
            errors.append(f"{where}: payload of {len(n.payload.encode())} bytes (limit {NOTIFY_LIMIT})")
        try:
            ev = parse_event(n.payload)
        except ValueError as ex:
            errors.append(f"{where}: not JSON ({ex}): {short(n.payload, SHORT)}")
            continue
        if not isinstance(ev, dict):
            errors.append(f"{where}: not a JSON object: {short(n.payload, SHORT)}")
            continue
        t = by_table.get((ev.get("schema"), ev.get("table")))
        if t is not None and n.channel != t.channel:
            errors.append(f"{where}: event for {t.schema}.{t.name} on channel {n.channel!r}, "
                          f"expected {t.channel!r}")
        events.append((where, ev))

    # Every id unique, of the form <xid>.<seq>, and a sane timestamp.
    seen_ids = {}
    for where, ev in events:
        check_common(ev, errors, where, t_lo, t_hi)
        i = ev.get("id")
        if i in seen_ids:
            errors.append(f"{where}: id {i!r} already used by {seen_ids[i]}")
        seen_ids[i] = where

    # Match events to expectations, per transaction.  Across transactions the order is
    # the commit order; inside one, events of the same table come in order of change.
    got_by_xid, exp_by_xid = {}, {}
    for where, ev in events:
        got_by_xid.setdefault(ev.get("xid"), []).append((where, ev))
    for e in w.expected:
        exp_by_xid.setdefault(e.xid, []).append(e)

    xid_order_got = list(dict.fromkeys(ev.get("xid") for _, ev in events))
    xid_order_exp = [x for x in dict.fromkeys(e.xid for e in w.expected) if x in got_by_xid]
    if [x for x in xid_order_got if x in exp_by_xid] != xid_order_exp:
        errors.append("transactions' events did not arrive in commit order")

    for xid, got in got_by_xid.items():
        if xid not in exp_by_xid:
            step = w.xids.get(xid)
            for where, ev in got:
                errors.append(f"{where}: unexpected event {ev.get('op')} {ev.get('schema')}.{ev.get('table')} "
                              f"key={short(ev.get('key'), 80)} from "
                              + (f"step {step!r}, which must send nothing" if step
                                 else f"unknown xid {xid!r} (rolled-back work?)"))

    refs = []
    for xid, exp in exp_by_xid.items():
        got = got_by_xid.get(xid, [])
        step = exp[0].step
        if len(got) != len(exp):
            errors.append(f"step {step!r} (xid {xid}): {len(got)} events, expected {len(exp)}:\n"
                          + "".join(f"      expected {e.describe()}\n" for e in exp)
                          + "".join(f"      got      {short(ev, 200)}\n" for _, ev in got))
            continue
        # pair them up table by table, in order
        remaining = list(got)
        for e in exp:
            idx = next((k for k, (_, ev) in enumerate(remaining)
                        if ev.get("schema") == e.table.schema and ev.get("table") == e.table.name),
                       None)
            if idx is None:
                errors.append(f"step {step!r}: no event for expected {e.describe()}")
                continue
            where, ev = remaining.pop(idx)
            where = f"{where} (step {step!r}, {e.op})"
            if e.oversize:
                check_envelope_keys(ev, e, errors, where)
                for k, want in (("op", e.op), ("schema", e.table.schema),
                                ("table", e.table.name), ("xid", e.xid)):
                    if ev.get(k) != want:
                        errors.append(f"{where}: {k} = {ev.get(k)!r}, expected {want!r}")
                if e.key is not None and canon(ev.get("key")) != canon(e.key):
                    errors.append(f"{where}: key = {short(ev.get('key'), SHORT)}, expected {short(e.key, SHORT)}")
                if isinstance(ev.get("ref"), int):
                    refs.append((where, ev, e))
            else:
                if "ref" in ev or "truncated" in ev:
                    errors.append(f"{where}: small event sent as a reference: {short(ev, SHORT)}")
                    continue
                check_event(ev, e, errors, where)

    # Resolve the references with notifier.payload(ref).
    for where, env, e in refs:
        try:
            text = setup.execute("SELECT notifier.payload(%s)::text", (env["ref"],)).fetchone()[0]
        except psycopg.Error as ex:
            errors.append(f"{where}: notifier.payload({env['ref']}) failed: {ex}")
            continue
        full = parse_event(text)
        w2 = f"{where} -> notifier.payload({env['ref']})"
        if len(text.encode()) < NOTIFY_LIMIT:
            errors.append(f"{w2}: the full event is only {len(text.encode())} bytes, "
                          f"why was it sent as a reference?")
        for k in BASE_KEYS + ["key"]:
            if k in env and full.get(k) != env[k]:
                errors.append(f"{w2}: {k} = {full.get(k)!r}, envelope has {env[k]!r}")
        check_event(full, e, errors, w2)

    n_exp, n_got = len(w.expected), len(events)
    if n_got != n_exp:
        errors.insert(0, f"received {n_got} events, expected exactly {n_exp}")
    for m in errors:
        ctx.check(False, m)
    if errors:
        print(f"  (all {n_got} notifications received, in order:)", file=sys.stderr)
        for where, ev in events:
            print(f"    {short(ev, 240)}", file=sys.stderr)
        sys.stderr.flush()
        return
    ctx.result(f"{n_got} events in {len(exp_by_xid)} transactions as expected "
               f"({len(refs)} oversize resolved with notifier.payload(), "
               f"{len(w.xids) - len(exp_by_xid)} transactions correctly silent, "
               f"rolled-back work never seen)")


STEPS = [
    Step("events", "a mixed workload: every NOTIFY payload checked against the event format",
         step_events),
]


if __name__ == "__main__":
    main(NAME, STEPS, Checks(), setup=setup, cleanup=cleanup, timeout=TIMEOUT)
