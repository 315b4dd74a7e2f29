#!/usr/bin/python3
"""notifier.backfill(): the existing rows of a watched table as READ events,
sent by the worker to the channel's routes, on a cluster of its own (it
kills the worker with kill -9 and restarts the server with -m immediate,
which test/run's log check would call crashes).

Steps:
  complete     5,000 rows, batch_size 700: every row exactly once as a READ
               event in the queue route, the watch's payload (to_jsonb() of
               the row less the excluded column, which never appears),
               rows_sent and state 'done' in notifier.backfills;
  where        "where" => 'id % 3 = 0' on a second channel, by a role that row
               security lets see ids up to 3000: exactly those 1000 rows;
               "where" runs as the caller of backfill() (a function in it
               records current_user);
  keys         payload => 'keys' on a third channel: READ events carry the key only;
  concurrent   10,000 rows, batch_size 100, while 4 writers update, delete and
               insert keys of the same table (mostly those just ahead of the
               backfill, holding their rows a moment before they commit: a
               batch that read without waiting for them fails this, as the
               code did without its FOR SHARE): for every key the last
               event the queue got is the row's final state (to_jsonb() of
               the row), and a deleted row's last event is its DELETE;
  kill9        kill -9 of the worker in a loop while a backfill runs: every
               row exactly once (distinct keys = rows, no key twice);
  immediate    pg_ctl restart -m immediate x2 while a backfill runs: the same;
  cancel       cancel_backfill() stops it: state 'cancelled', fewer rows sent
               than the table has, and no more after (the queue holds exactly
               rows_sent READ events once the outbox is empty);
  partitioned  a partitioned table (3 partitions), read through the parent:
               every row once, events named after the partitioned table;
  locked       a row held locked by an open transaction past the batch's
               lock_timeout (1 s): the batch is rolled back, last_error says
               so, and once the lock goes the backfill goes on from where it
               was: every row once, the locked row as its writer left it;
  dropped      the table dropped before the worker takes the backfill up:
               state 'failed' with the reason.

Run it as root with Debian's python3 (psycopg 3.1):
    /usr/bin/python3 test/integration/test_backfill.py [STEP...]
Environment: PG_MAJOR (15), PG_BIN or PG_CONFIG, PG_OS_USER (postgres),
PG_NOTIFIER_TEST_TIMEOUT (watchdog, 240 s), KEEP_TEST_DIR.
"""

import os
import random
import signal
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from itlib import Step, TestFailure, log  # noqa: E402
from owncluster import ClusterTest, poll  # noqa: E402

NAME = "test_backfill"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "240"))
DB = "bf"
WORKER = "pg_notifier worker"


class Test(ClusterTest):
    def __init__(self):
        super().__init__(NAME, f"pg_notifier.databases = '{DB}'\n", TIMEOUT)

    # -- helpers ---------------------------------------------------------------
    def q(self, query, params=None):
        """A query; while the server restarts (after a kill -9), again."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.cl.q(DB, query, params)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def one(self, query, params=None):
        return self.q(query, params)[0][0]

    def worker_pid(self):
        try:
            rows = self.cl.q("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = %s "
                                         "AND datname = %s", (WORKER, DB))
        except psycopg.OperationalError:
            return None         # the server is restarting
        return rows[0][0] if rows else None

    def wait_worker(self, timeout, not_pid=None):
        return poll(f"a worker of {DB}" + (f" other than {not_pid}" if not_pid else ""), timeout,
                    lambda: (lambda w: (w is not None and w != not_pid, w))(self.worker_pid()),
                    interval=0.05)

    def table(self, name, rows, extra=""):
        """A table of rows (id, name, secret, v), watched on channel name
        (secret excluded) with a queue route."""
        self.q(f"CREATE TABLE {name} (id int PRIMARY KEY, name text, secret text, v int{extra})")
        self.q(f"INSERT INTO {name} SELECT g, 'n' || g, 's' || g, 0 FROM generate_series(1, %s) g",
               (rows,))
        self.q(f"SELECT notifier.watch('{name}', exclude => ARRAY['secret'])")
        self.q(f"SELECT notifier.add_queue('{name}')")

    def backfill_done(self, args, rows, timeout=60):
        """notifier.backfill(args), then its state 'done' with rows rows sent;
        returns its id."""
        bid = self.one(f"SELECT notifier.backfill({args})")
        st = self.wait_state(bid, ("done", "failed"), timeout)
        if st[:2] != ("done", rows):
            raise TestFailure(f"backfill {bid}: {st}, expected done with {rows} rows sent")
        return bid

    def state(self, bid):
        return self.q("SELECT state, rows_sent, last_error FROM notifier.backfills WHERE id = %s",
                      (bid,))[0]

    def wait_state(self, bid, states, timeout):
        return poll(f"backfill {bid} in state {states}", timeout,
                    lambda: (lambda s: (s[0] in states, s))(self.state(bid)), interval=0.05)[1]

    def wait_outbox_empty(self, timeout=60):
        poll("notifier.outbox empty", timeout,
             lambda: (lambda n: (n == 0, n))(self.one("SELECT count(*) FROM notifier.outbox")),
             interval=0.05)

    def check_reads_once(self, channel, table, rows, changes=0):
        """Every row of table exactly once as a READ event on channel, and
        changes other events."""
        self.wait_outbox_empty()
        n, keys, other = self.q(
            "SELECT count(*) FILTER (WHERE payload->>'op' = 'READ'), "
            "count(DISTINCT payload->'key') FILTER (WHERE payload->>'op' = 'READ'), "
            "count(*) FILTER (WHERE payload->>'op' <> 'READ') "
            "FROM notifier.queue WHERE channel = %s", (channel,))[0]
        missing = self.one(f"SELECT count(*) FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM notifier.queue x "
                           "WHERE x.channel = %s AND x.payload->>'op' = 'READ' "
                           "AND x.payload->'key' = jsonb_build_object('id', t.id))", (channel,))
        if (n, keys, other, missing) != (rows, rows, changes, 0):
            raise TestFailure(f"{channel}: {n} READ events, {keys} distinct keys, {other} other events "
                              f"(expected {changes}), {missing} rows without a READ event; expected each "
                              f"of the {rows} rows once")
        return n

    # -- steps -----------------------------------------------------------------
    def step_complete(self):
        self.table("items", 5000)
        bid = self.backfill_done("'items', batch_size => 700", 5000)
        self.check_reads_once("items", "items", 5000)
        bad = self.one("SELECT count(*) FROM notifier.queue x JOIN items t "
                       "ON x.payload->'key' = jsonb_build_object('id', t.id) WHERE x.channel = 'items' "
                       "AND (x.payload->'row' <> to_jsonb(t) - 'secret' OR x.payload->>'table' <> 'items' "
                       "OR x.payload->>'schema' <> 'public' OR x.payload::text LIKE '%secret%' "
                       "OR x.payload::text LIKE '%\"s1%')")
        if bad:
            raise TestFailure(f"{bad} READ events whose row is not to_jsonb() of the row less 'secret'")
        last_key, finished = self.q("SELECT last_key, finished_at IS NOT NULL FROM notifier.backfills "
                                    "WHERE id = %s", (bid,))[0]
        if last_key != ["5000"] or not finished:
            raise TestFailure(f"notifier.backfills: last_key {last_key}, finished {finished}")
        self.result("5000 rows, each once, READ, payload as the watch's, the excluded column never")

    def step_where(self):
        self.q("SELECT notifier.watch('items', channel => 'items_w', exclude => ARRAY['secret'])")
        self.q("SELECT notifier.add_queue('items_w')")
        self.q("CREATE TABLE who_ran (r text)")
        self.q("CREATE FUNCTION public.note_user() RETURNS boolean LANGUAGE sql "
               "AS $$ INSERT INTO public.who_ran SELECT current_user; SELECT true $$")
        self.q("CREATE ROLE bf_reader")
        self.q("GRANT SELECT ON items TO bf_reader")
        self.q("GRANT INSERT ON who_ran TO bf_reader")
        self.q("GRANT EXECUTE ON FUNCTION notifier.backfill(regclass, text, text, integer) TO bf_reader")
        # and row security: bf_reader sees the first 3000 rows only
        self.q("CREATE POLICY first_rows ON items FOR SELECT TO bf_reader USING (id <= 3000)")
        self.q("ALTER TABLE items ENABLE ROW LEVEL SECURITY")
        with self.cl.connect(DB) as c:
            c.autocommit = True
            c.execute("SET ROLE bf_reader")
            bid = c.execute("SELECT notifier.backfill('items', 'items_w', "
                            "\"where\" => 'id % 3 = 0 AND public.note_user()', batch_size => 500)"
                            ).fetchone()[0]
        st = self.wait_state(bid, ("done", "failed"), 60)
        self.q("ALTER TABLE items DISABLE ROW LEVEL SECURITY")
        if st[:2] != ("done", 1000):
            raise TestFailure(f"backfill {bid}: {st}, expected done with 1000 rows")
        self.wait_outbox_empty()
        n, bad = self.q("SELECT count(*), count(*) FILTER (WHERE (payload->'key'->>'id')::int % 3 <> 0 "
                        "OR (payload->'key'->>'id')::int > 3000) "
                        "FROM notifier.queue WHERE channel = 'items_w'")[0]
        if (n, bad) != (1000, 0):
            raise TestFailure(f"items_w: {n} events, {bad} of rows the where clause or row security excludes")
        users = [r for (r,) in self.q("SELECT DISTINCT r FROM who_ran")]
        if users != ["bf_reader"]:
            raise TestFailure(f"\"where\" ran as {users}, not as the caller bf_reader")
        self.result("where: exactly the 1000 rows with id % 3 = 0 that row security shows the caller, "
                    "evaluated as the caller")

    def step_keys(self):
        self.q("SELECT notifier.watch('items', channel => 'items_k', payload => 'keys')")
        self.q("SELECT notifier.add_queue('items_k')")
        self.backfill_done("'items', 'items_k', batch_size => 5000", 5000)
        self.check_reads_once("items_k", "items", 5000)
        bad = self.one("SELECT count(*) FROM notifier.queue WHERE channel = 'items_k' "
                       "AND (payload ? 'row' OR NOT payload ? 'key')")
        if bad:
            raise TestFailure(f"{bad} READ events of a payload => 'keys' watch with a row, or without the key")
        self.result("payload => 'keys': the READ events carry the key only")

    def step_concurrent(self):
        rows = 10000
        self.table("acct", rows)
        stop = threading.Event()
        errors = []
        counts = [0, 0, 0]

        def writer(seed):
            rnd = random.Random(seed)
            try:
                with self.cl.connect(DB) as c:
                    c.autocommit = True
                    while not stop.is_set():
                        # mostly the keys just ahead of the backfill, where its
                        # next batch will read; some anywhere
                        at = c.execute("SELECT coalesce(last_key[1]::int, 0) FROM notifier.backfills "
                                       "WHERE channel = 'acct'").fetchall()
                        at = at[0][0] if at else 0
                        # in key order, as the batch locks them: no deadlock
                        ids = sorted(at + rnd.randint(1, 150) if rnd.random() < 0.8
                                     else rnd.randint(1, rows + 2000) for _ in range(rnd.randint(1, 4)))
                        try:
                            with c.transaction():
                                for i in ids:
                                    kind = rnd.random()
                                    if kind < 0.6:
                                        c.execute("UPDATE acct SET v = v + 1, name = md5(random()::text) "
                                                  "WHERE id = %s", (i,))
                                        counts[0] += 1
                                    elif kind < 0.8:
                                        c.execute("DELETE FROM acct WHERE id = %s", (i,))
                                        counts[1] += 1
                                    else:
                                        c.execute("INSERT INTO acct VALUES (%s, 'ins', 'x', 1) "
                                                  "ON CONFLICT (id) DO UPDATE SET v = acct.v + 100", (i,))
                                        counts[2] += 1
                                # the rows stay locked a moment: a batch reading
                                # them meanwhile must wait for this commit
                                time.sleep(rnd.uniform(0, 0.004))
                        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                            pass
            except Exception as ex:     # noqa: BLE001 -- reported below
                errors.append(f"writer {seed}: {type(ex).__name__}: {ex}")

        threads = [threading.Thread(target=writer, args=(s,), daemon=True) for s in range(4)]
        for t in threads:
            t.start()
        # the writers are at it before the backfill starts
        poll("writers started", 30, lambda: (sum(counts) > 200, sum(counts)), interval=0.02)
        bid = self.one("SELECT notifier.backfill('acct', batch_size => 100)")
        st = self.wait_state(bid, ("done", "failed"), 120)
        during = sum(counts)
        # and a little after it is done
        poll("writers after the backfill", 30, lambda: (sum(counts) > during + 200, sum(counts)),
             interval=0.02)
        stop.set()
        for t in threads:
            t.join(30)
        if errors:
            raise TestFailure(f"writers failed: {errors[:3]}")
        if st[0] != "done":
            raise TestFailure(f"backfill {bid}: {st}")
        self.wait_outbox_empty()
        # changes between the first and the last READ event: the writers overlapped it
        overlap = self.one("WITH r AS (SELECT min(id) lo, max(id) hi FROM notifier.queue "
                           "WHERE channel = 'acct' AND payload->>'op' = 'READ') "
                           "SELECT count(*) FROM notifier.queue x, r WHERE x.channel = 'acct' "
                           "AND x.payload->>'op' <> 'READ' AND x.id BETWEEN r.lo AND r.hi")
        last = ("SELECT DISTINCT ON (payload->'key') payload->'key' AS k, payload->>'op' AS op, "
                "payload->'row' AS row FROM notifier.queue WHERE channel = 'acct' "
                "ORDER BY payload->'key', id DESC")
        wrong = self.q(f"WITH last AS ({last}) "
                       "SELECT l.k, l.op, l.row, to_jsonb(a) - 'secret' FROM last l "
                       "LEFT JOIN acct a ON jsonb_build_object('id', a.id) = l.k "
                       "WHERE (a.id IS NULL AND l.op <> 'DELETE') "
                       "   OR (a.id IS NOT NULL AND (l.op = 'DELETE' OR l.row <> to_jsonb(a) - 'secret')) "
                       "LIMIT 5")
        unseen = self.one(f"WITH last AS ({last}) SELECT count(*) FROM acct a WHERE NOT EXISTS "
                          "(SELECT 1 FROM last l WHERE l.k = jsonb_build_object('id', a.id))")
        reads = self.one("SELECT count(*) FROM notifier.queue WHERE channel = 'acct' AND payload->>'op' = 'READ'")
        log(f"   writers: {counts[0]} updates, {counts[1]} deletes, {counts[2]} upserts; "
            f"{reads} READ events, {overlap} change events among them")
        if wrong or unseen:
            raise TestFailure(f"{unseen} rows whose key got no event; keys whose last event is not the "
                              f"row's final state: {wrong}")
        if overlap == 0:
            raise TestFailure("no change event came between the READ events: the writers did not overlap")
        self.result(f"concurrent writers: the last event of every key is its final state "
                    f"({overlap} changes interleaved)")

    def run_disrupted(self, name, rows, disrupt, least):
        """A backfill of rows rows, batch_size 50, disrupt()ed while it runs;
        returns how many times."""
        self.table(name, rows)
        bid = self.one(f"SELECT notifier.backfill('{name}', batch_size => 50)")
        times = 0
        while self.state(bid)[0] == "running":
            if self.state(bid)[1] == 0:
                time.sleep(0.02)
                continue
            disrupt()
            times += 1
            time.sleep(random.uniform(0.1, 0.3))
        st = self.wait_state(bid, ("done", "failed"), 120)
        if st[:2] != ("done", rows):
            raise TestFailure(f"backfill {bid}: {st}, expected done with {rows} rows sent")
        if times < least:
            raise TestFailure(f"the backfill ended after {times} disruptions; the test needs {least}")
        self.check_reads_once(name, name, rows)
        return times

    def step_kill9(self):
        def kill():
            pid = self.wait_worker(60)[1]
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
            self.cl.drop_all()
            self.wait_worker(60, not_pid=pid)
        n = self.run_disrupted("k9", 100000, kill, 2)
        self.result(f"kill -9 of the worker x{n} during the backfill: 100000 rows, each once")

    def step_immediate(self):
        def restart():
            before = self.worker_pid()
            self.cl.restart("immediate")
            self.wait_worker(60, not_pid=before)
        n = self.run_disrupted("imm", 100000, restart, 2)
        self.result(f"restart -m immediate x{n} during the backfill: 100000 rows, each once")

    def step_cancel(self):
        self.table("cn", 50000)
        bid = self.one("SELECT notifier.backfill('cn', batch_size => 10)")
        poll("rows sent", 30, lambda: (lambda s: (s[1] > 0, s))(self.state(bid)), interval=0.01)
        if not self.one("SELECT notifier.cancel_backfill(%s)", (bid,)):
            raise TestFailure("cancel_backfill() of a running backfill returned false")
        if self.one("SELECT notifier.cancel_backfill(%s)", (bid,)):
            raise TestFailure("cancel_backfill() of a cancelled backfill returned true")
        st = self.state(bid)
        self.wait_outbox_empty()
        reads = self.one("SELECT count(*) FROM notifier.queue WHERE channel = 'cn'")
        st2 = self.state(bid)
        if st[0] != "cancelled" or st2 != st or reads != st[1] or st[1] >= 50000:
            raise TestFailure(f"after cancel_backfill(): {st}, then {st2}, {reads} events in the queue")
        self.result(f"cancel: stopped at {st[1]} of 50000 rows, events = rows_sent")

    def step_partitioned(self):
        self.q("CREATE TABLE pt (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
        for r in ("eu", "us", "ap"):
            self.q(f"CREATE TABLE pt_{r} PARTITION OF pt FOR VALUES IN ('{r}')")
        self.q("INSERT INTO pt SELECT g, (ARRAY['eu','us','ap'])[g % 3 + 1], g FROM generate_series(1, 3000) g")
        self.q("SELECT notifier.watch('pt')")
        self.q("SELECT notifier.add_queue('pt')")
        self.backfill_done("'pt', batch_size => 250", 3000)
        self.wait_outbox_empty()
        n, keys, named = self.q("SELECT count(*), count(DISTINCT payload->'key'), "
                                "count(*) FILTER (WHERE payload->>'table' = 'pt' AND payload->>'op' = 'READ') "
                                "FROM notifier.queue WHERE channel = 'pt'")[0]
        bad = self.one("SELECT count(*) FROM notifier.queue x JOIN pt t "
                       "ON x.payload->'key' = jsonb_build_object('id', t.id, 'region', t.region) "
                       "WHERE x.channel = 'pt' AND x.payload->'row' = to_jsonb(t)")
        if (n, keys, named, bad) != (3000, 3000, 3000, 3000):
            raise TestFailure(f"pt: {n} events, {keys} keys, {named} READ events of 'pt', {bad} matching rows")
        self.result("partitioned table: 3000 rows of 3 partitions, each once, named after the parent")

    def step_locked(self):
        self.table("lk", 3000)
        blocker = self.cl.connect(DB)
        try:
            blocker.autocommit = False
            blocker.execute("UPDATE lk SET v = 42, name = 'held' WHERE id = 1500")
            bid = self.one("SELECT notifier.backfill('lk', batch_size => 500)")
            # the batch that reaches row 1500 waits for it, past its
            # lock_timeout (1 s): rolled back, kept, retried
            st = poll("the batch at the locked row timed out", 60,
                      lambda: (lambda s: (s[2] is not None and "lock timeout" in s[2], s))(self.state(bid)),
                      interval=0.1)[1]
            if st[0] != "running" or st[1] != 1000:
                raise TestFailure(f"after the lock timeout: {st}, expected running with 1000 rows sent")
            blocker.commit()
        finally:
            blocker.close()
        st = self.wait_state(bid, ("done", "failed"), 60)
        if st != ("done", 3000, None):
            raise TestFailure(f"backfill {bid} after the lock was released: {st}")
        self.check_reads_once("lk", "lk", 3000, changes=1)      # and the UPDATE
        last = self.q("SELECT payload->>'op', payload->'row'->>'name' FROM notifier.queue "
                      "WHERE channel = 'lk' AND payload->'key' = '{\"id\": 1500}' ORDER BY id DESC LIMIT 1")
        if last != [("READ", "held")]:
            raise TestFailure(f"the last event of the row that was locked: {last}")
        self.result("a batch that hit the lock timeout was retried, not skipped: 3000 rows once")

    def step_dropped(self):
        self.table("gone", 10)
        with self.cl.connect(DB) as c:
            with c.transaction():
                bid = c.execute("SELECT notifier.backfill('gone')").fetchone()[0]
                c.execute("DROP TABLE gone")
        st = self.wait_state(bid, ("done", "failed"), 60)
        if st[0] != "failed" or "does not exist" not in (st[2] or ""):
            raise TestFailure(f"backfill {bid} of a dropped table: {st}")
        self.result(f"dropped table: failed, {st[2]!r}")

    def setup(self):
        self.cl.q("postgres", f"CREATE DATABASE {DB}")
        self.q("CREATE EXTENSION pg_notifier")
        secs, pid = self.wait_worker(30)
        log(f"worker {pid} up {secs:.2f} s after CREATE EXTENSION")


STEPS = [
    Step("complete", "every row once, READ, the watch's payload, exclude respected", Test.step_complete),
    Step("where", "\"where\": only those rows, evaluated as the caller", Test.step_where, needs=("complete",)),
    Step("keys", "a payload => 'keys' watch: READ events with the key only", Test.step_keys,
         needs=("complete",)),
    Step("concurrent", "last event per key = final state under concurrent writers", Test.step_concurrent),
    Step("kill9", "kill -9 of the worker during a backfill", Test.step_kill9),
    Step("immediate", "restart -m immediate during a backfill", Test.step_immediate),
    Step("cancel", "cancel_backfill() stops it", Test.step_cancel),
    Step("partitioned", "a partitioned table, through its parent", Test.step_partitioned),
    Step("locked", "a batch past its lock_timeout is retried, never skipped", Test.step_locked),
    Step("dropped", "a backfill of a table dropped meanwhile fails", Test.step_dropped),
]


if __name__ == "__main__":
    Test().run(STEPS)
