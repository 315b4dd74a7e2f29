--
-- outbox: delivery => 'outbox' writes events into notifier.outbox, in the
-- transaction that made the change, instead of sending them with NOTIFY.
-- No worker serves the regression database, so the rows stay where the
-- trigger wrote them.
--
SELECT listen('ob', 'ob_notify', 'ob_stmt');

-- the outbox holds no event yet; this is what tests read
CREATE VIEW outbox_ev AS
SELECT channel, masked(event::text) AS event, masked(notify) AS notify
  FROM notifier.outbox ORDER BY id;

CREATE TABLE ob (id int PRIMARY KEY, status text, note text, secret text);
SELECT notifier.watch('ob', delivery => 'outbox', exclude => ARRAY['secret']);
SELECT "table", channel, delivery, notify FROM notifier.watches;

-- the same workload as NOTIFY mode would get: coalesced, no-op dropped
INSERT INTO ob VALUES (1, 'new', 'a', 's1'), (2, 'new', 'b', 's2');
BEGIN;
UPDATE ob SET status = 'paid' WHERE id = 1;
UPDATE ob SET note = 'aa' WHERE id = 1;
INSERT INTO ob VALUES (3, 'new', 'c', 's3');
DELETE FROM ob WHERE id = 3;
UPDATE ob SET secret = 'changed' WHERE id = 2;		-- no watched column changed
COMMIT;
DELETE FROM ob WHERE id = 2;
SELECT * FROM outbox_ev;
SELECT * FROM ev;						-- no NOTIFY at all
SELECT outbox_written FROM notifier.capture_stats() \gset
SELECT :outbox_written >= 4 AS counted;

-- ids: within a transaction, in the order of the events
SELECT bool_and(ok) AS ordered FROM (
	SELECT (event->>'id') = (event->>'xid') || '.' ||
		   row_number() OVER (PARTITION BY event->>'xid' ORDER BY id) AS ok
	  FROM notifier.outbox) s;

-- rolled back, or rolled back to a savepoint: nothing is left
TRUNCATE notifier.outbox;
BEGIN;
INSERT INTO ob VALUES (10, 'x');
ROLLBACK;
BEGIN;
INSERT INTO ob VALUES (11, 'kept');
SAVEPOINT s;
INSERT INTO ob VALUES (12, 'gone');
UPDATE ob SET status = 'gone too' WHERE id = 11;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT * FROM outbox_ev;

-- without coalescing, rows are written as changes are made; a savepoint
-- rolled back takes them with it
SELECT notifier.watch('ob', delivery => 'outbox', dedup => false);
TRUNCATE notifier.outbox;
BEGIN;
UPDATE ob SET status = 'one' WHERE id = 11;
SAVEPOINT s;
UPDATE ob SET status = 'two' WHERE id = 11;
ROLLBACK TO SAVEPOINT s;
UPDATE ob SET status = 'three' WHERE id = 11;
COMMIT;
SELECT * FROM outbox_ev;

-- no size limit: a large event is stored whole, whatever on_oversize says
SELECT notifier.watch('ob', delivery => 'outbox', on_oversize => 'error');
TRUNCATE notifier.outbox;
SELECT count(*) AS stored_before FROM notifier.payloads \gset
INSERT INTO ob VALUES (20, 'big', repeat('x', 20000));
SELECT channel, length(event::text) > 20000 AS whole, notify FROM notifier.outbox;
SELECT count(*) - :stored_before AS stored FROM notifier.payloads;

-- notify => true: the row also carries what the worker will NOTIFY, after
-- the oversize policy (here a reference to notifier.payloads)
SELECT notifier.watch('ob', channel => 'ob_notify', delivery => 'outbox', notify => true);
SELECT channel, delivery, notify FROM notifier.watches ORDER BY channel;
TRUNCATE notifier.outbox;
UPDATE ob SET status = 'small' WHERE id = 11;
UPDATE ob SET status = 'large' WHERE id = 20;
SELECT channel, notify FROM outbox_ev;
SELECT notify::json->>'ref' IS NOT NULL AS referenced,
	   notifier.payload((notify::json->>'ref')::bigint)::text = event::text AS same
  FROM notifier.outbox WHERE notify LIKE '%truncated%';
SELECT * FROM ev;
SELECT notifier.unwatch('ob', 'ob_notify');

-- with on_oversize => 'error', the NOTIFY of notify => true is refused
-- (uncoalesced, but held behind the event the watch of channel 'ob' holds,
-- to keep its place: the COMMIT fails)
SELECT notifier.watch('ob', channel => 'ob_notify', delivery => 'outbox',
		notify => true, on_oversize => 'error', dedup => false);
SELECT try($$UPDATE ob SET status = 'larger' WHERE id = 20$$);
SELECT notifier.unwatch('ob', 'ob_notify');

-- statement level and TRUNCATE
CREATE TABLE ob_stmt (id int);
SELECT notifier.watch('ob_stmt', level => 'statement', delivery => 'outbox');
TRUNCATE notifier.outbox;
INSERT INTO ob_stmt SELECT generate_series(1, 5);
TRUNCATE ob_stmt;
SELECT * FROM outbox_ev;

-- two-phase commit: rows written as changes are made can be prepared
SELECT notifier.watch('ob_stmt', delivery => 'outbox', dedup => false);
TRUNCATE notifier.outbox;
BEGIN;
INSERT INTO ob_stmt VALUES (1);
PREPARE TRANSACTION 'ob_2pc';
SELECT count(*) AS before_commit FROM notifier.outbox;
COMMIT PREPARED 'ob_2pc';
SELECT * FROM outbox_ev;

-- outbox_stats: per channel, with or without a route
SELECT channel, events, oldest_age >= '0'::interval AS aged, routed
  FROM notifier.outbox_stats ORDER BY channel;

-- a role that may write the table needs no privilege on the outbox, and
-- gets none: it cannot read the outbox or its statistics
CREATE ROLE ob_writer;
GRANT INSERT, UPDATE, DELETE, SELECT ON ob TO ob_writer;
TRUNCATE notifier.outbox;
SET ROLE ob_writer;
INSERT INTO ob VALUES (30, 'by writer');
SELECT try($$SELECT * FROM notifier.outbox$$);
SELECT try($$SELECT * FROM notifier.outbox_stats$$);
SELECT try($$DELETE FROM notifier.outbox$$);
RESET ROLE;
SELECT channel, event FROM outbox_ev;
REVOKE ALL ON ob FROM ob_writer;
DROP ROLE ob_writer;

-- bad options
SELECT notifier.watch('ob', delivery => 'outbx');
SELECT notifier.watch('ob', delivery => '');
SELECT notifier.watch('ob', notify => true);
SELECT notifier.watch('ob', delivery => 'notify', notify => false);
CREATE TABLE ob_bad (id int);
CREATE TRIGGER bad AFTER INSERT ON ob_bad FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('delivery=outbox', 'notify=maybe');
INSERT INTO ob_bad VALUES (1);
DROP TRIGGER bad ON ob_bad;
CREATE TRIGGER bad AFTER INSERT ON ob_bad FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('notify=true', 'delivery=outbox', 'delivery=notify');
INSERT INTO ob_bad VALUES (1);
DROP TRIGGER bad ON ob_bad;
-- written by hand, in either order: fine
CREATE TRIGGER good AFTER INSERT ON ob_bad FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('notify=true', 'delivery=outbox', 'channel=ob_bad');
TRUNCATE notifier.outbox;
INSERT INTO ob_bad VALUES (1);
SELECT channel, event, notify FROM outbox_ev;
DROP TABLE ob_bad;

-- a plain index on the outbox is maintained
TRUNCATE notifier.outbox;
CREATE INDEX outbox_channel_idx ON notifier.outbox (channel);
INSERT INTO ob VALUES (43, 'indexed');
SET enable_seqscan = off;
SELECT count(*) AS found FROM notifier.outbox WHERE channel = 'ob';
RESET enable_seqscan;
DROP INDEX notifier.outbox_channel_idx;

-- an outbox that is not as installed is refused, with the reason
CREATE INDEX outbox_bad_idx ON notifier.outbox (lower(channel));
INSERT INTO ob VALUES (40, 'idx');
DROP INDEX notifier.outbox_bad_idx;
ALTER TABLE notifier.outbox ADD COLUMN extra int;
INSERT INTO ob VALUES (41, 'col');
ALTER TABLE notifier.outbox DROP COLUMN extra;	-- still not the same layout
INSERT INTO ob VALUES (42, 'col');
SELECT count(*) AS written FROM notifier.outbox;

SELECT notifier.unwatch('ob', 'ob');
SELECT notifier.unwatch('ob_stmt', 'ob_stmt');
DROP TABLE ob, ob_stmt;
SELECT * FROM ev;

-- reinstalling makes a new outbox
DROP VIEW outbox_ev;
DROP EXTENSION pg_notifier;
CREATE EXTENSION pg_notifier;
CREATE TABLE ob (id int PRIMARY KEY);
SELECT notifier.watch('ob', delivery => 'outbox');
INSERT INTO ob VALUES (1);
SELECT channel, masked(event::text) AS event FROM notifier.outbox;
DROP TABLE ob;
