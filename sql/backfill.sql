--
-- notifier.backfill(): every bad input is a clear error before anything is
-- started; a good one is a row of notifier.backfills that the worker takes
-- up (no worker runs in this database: it stays 'running' here, see
-- test/integration/test_backfill.py for what the worker does with it);
-- cancel_backfill().
--
\set VERBOSITY default
CREATE TABLE bf (id int PRIMARY KEY, name text, secret text);
INSERT INTO bf SELECT g, 'n' || g, 's' || g FROM generate_series(1, 10) g;
CREATE TABLE bf_nokey (a int);
CREATE TABLE bf_notify (id int PRIMARY KEY);
CREATE TABLE bf_two (id int PRIMARY KEY);
CREATE VIEW bf_view AS SELECT 1 AS a;

-- NULLs
SELECT notifier.backfill(NULL);
SELECT notifier.backfill('bf', batch_size => NULL);

-- a regclass that names no relation; not a table
SELECT notifier.backfill(0::regclass);
SELECT notifier.backfill('bf_view');

-- no watch; the watch of another channel
SELECT notifier.backfill('bf');
SELECT notifier.watch('bf', exclude => ARRAY['secret']);
SELECT notifier.backfill('bf', 'nope');
SELECT notifier.backfill('bf', repeat('c', 200));

-- two watches and no channel named
SELECT notifier.watch('bf_two', channel => 'two_a');
SELECT notifier.watch('bf_two', channel => 'two_b');
SELECT notifier.backfill('bf_two');

-- a channel without a route: nothing would receive the events
SELECT notifier.backfill('bf');
SELECT notifier.add_queue('bf') > 0 AS routed;

-- a watch that delivers with NOTIFY only
SELECT notifier.watch('bf_notify', delivery => 'notify');
SELECT notifier.add_queue('bf_notify') > 0 AS routed;
SELECT notifier.backfill('bf_notify');

-- a table without a key
SELECT notifier.watch('bf_nokey');
SELECT notifier.add_queue('bf_nokey') > 0 AS routed;
SELECT notifier.backfill('bf_nokey');

-- batch_size
SELECT notifier.backfill('bf', batch_size => 0);
SELECT notifier.backfill('bf', batch_size => -5);
SELECT notifier.backfill('bf', batch_size => 100001);

-- "where": not boolean, unknown column, two statements, an alias or a
-- comment that would swallow the rest, a subquery of what it cannot read,
-- a function of another schema without its schema (the worker's
-- search_path is pg_catalog, pg_temp), an aggregate, empty
SELECT notifier.backfill('bf', "where" => 'id + 1');
SELECT notifier.backfill('bf', "where" => 'nope > 1');
SELECT notifier.backfill('bf', "where" => 'true; DROP TABLE bf');
SELECT notifier.backfill('bf', "where" => 'true) AS x --');
SELECT notifier.backfill('bf', "where" => 'true) FROM pg_class --');
SELECT notifier.backfill('bf', "where" => 'true)) OR ((true');
CREATE FUNCTION public.bf_pred(int) RETURNS boolean LANGUAGE sql AS 'SELECT $1 > 3';
SELECT notifier.backfill('bf', "where" => 'bf_pred(id)');
SELECT notifier.backfill('bf', "where" => 'count(*) > 1');
SELECT notifier.backfill('bf', "where" => '');
-- a long one is not echoed whole: no QUERY
SELECT notifier.backfill('bf', "where" => 'nope > ' || repeat('1', 2000));

-- privileges: EXECUTE is granted to no one; with it, SELECT on the table
CREATE ROLE bf_user;
SET ROLE bf_user;
SELECT notifier.backfill('bf');
RESET ROLE;
GRANT EXECUTE ON FUNCTION notifier.backfill(regclass, text, text, integer) TO bf_user;
GRANT EXECUTE ON FUNCTION notifier.cancel_backfill(bigint) TO bf_user;
SET ROLE bf_user;
SELECT notifier.backfill('bf');
SELECT count(*) FROM notifier.backfills;
RESET ROLE;

-- good ones: a row each, 'running', with the estimate of an analyzed table;
-- a "where" that needs a schema has it, and "where" may be written to look
-- like anything as long as it is one expression
ANALYZE bf;
SELECT notifier.backfill('bf') AS bf1 \gset
SELECT notifier.backfill('bf', 'bf', 'public.bf_pred(id) AND name <> $$x$$ -- comment', 5) AS bf2 \gset
SELECT notifier.backfill('bf', "where" => 'true) OR (true') > 0 AS accepted;
SELECT id = :bf1 AS first, "table", channel, state, rows_sent, rows_estimated, last_key,
	   finished_at, last_error
  FROM notifier.backfills ORDER BY id;
SELECT "where", batch_size FROM notifier.backfill_jobs WHERE id = :bf2;

-- what bf_user may see: the backfills of tables it may read, and its own
GRANT SELECT ON bf TO bf_user;
SET ROLE bf_user;
SELECT notifier.backfill('bf', batch_size => 2) AS bf3 \gset
SELECT count(*) FROM notifier.backfills;
SELECT notifier.cancel_backfill(:bf1);
SELECT notifier.cancel_backfill(:bf3);
SELECT notifier.cancel_backfill(:bf3);
RESET ROLE;
-- with row security on the table, only its own
ALTER TABLE bf ENABLE ROW LEVEL SECURITY;
SET ROLE bf_user;
SELECT id = :bf3 AS own FROM notifier.backfills;
RESET ROLE;
ALTER TABLE bf DISABLE ROW LEVEL SECURITY;
REVOKE SELECT ON bf FROM bf_user;
SET ROLE bf_user;
SELECT id = :bf3 AS own FROM notifier.backfills;
-- the tables of the extension stay closed
SELECT count(*) FROM notifier.backfill_jobs;
RESET ROLE;

-- cancel_backfill(): NULL, unknown, done twice
SELECT notifier.cancel_backfill(NULL);
SELECT notifier.cancel_backfill(0);
SELECT notifier.cancel_backfill(:bf1);
SELECT notifier.cancel_backfill(:bf1);
SELECT id, state, finished_at IS NOT NULL AS finished FROM notifier.backfills ORDER BY id;

-- the READ event is for backfills only: the trigger never sends one
SELECT count(*) FROM notifier.outbox WHERE event::jsonb->>'op' = 'READ';

-- clean up
DELETE FROM notifier.backfill_jobs;
SELECT notifier.unwatch('bf');
SELECT notifier.unwatch('bf_notify');
SELECT notifier.unwatch('bf_nokey');
SELECT notifier.unwatch('bf_two', 'two_a');
SELECT notifier.unwatch('bf_two', 'two_b');
SELECT notifier.remove_route(id) FROM notifier.routes WHERE channel IN ('bf', 'bf_notify', 'bf_nokey');
DROP TABLE bf, bf_nokey, bf_notify, bf_two;
DROP VIEW bf_view;
DROP FUNCTION public.bf_pred(int);
DROP OWNED BY bf_user;
DROP ROLE bf_user;
