--
-- payload modes, keys, key changes, transactions
--
SELECT listen('keys', 'row', 'full', 'diff', 'nokey', 'replica');
CREATE TABLE items (id int PRIMARY KEY, name text, qty int, price numeric);
SELECT notifier.watch('items', channel => m, payload => m) FROM unnest(ARRAY['keys', 'row', 'full', 'diff']) m;

INSERT INTO items VALUES (1, 'apple', 3, 0.5);
UPDATE items SET qty = 4, price = 0.55 WHERE id = 1;
DELETE FROM items WHERE id = 1;
SELECT * FROM ev ORDER BY channel, event;

-- a change of key is a DELETE of the old key and an INSERT of the new one
INSERT INTO items VALUES (2, 'pear', 1, 1);
UPDATE items SET id = 20, qty = 2 WHERE id = 2;
SELECT * FROM ev WHERE channel IN ('row', 'diff') ORDER BY channel, event;

-- a composite key, in index order
CREATE TABLE lines (order_id int, line int, sku text, PRIMARY KEY (line, order_id));
SELECT notifier.watch('lines', channel => 'row');
INSERT INTO lines VALUES (7, 1, 'A-1');
SELECT * FROM ev;

-- no key at all: no "key", everything else works; keys mode is refused
CREATE TABLE logbook (at int, msg text);
SELECT notifier.watch('logbook', channel => 'nokey', payload => 'full');
INSERT INTO logbook VALUES (1, 'hello');
UPDATE logbook SET msg = 'bye';
DELETE FROM logbook;
SELECT * FROM ev;

-- a replica identity index stands in for a missing primary key
CREATE TABLE devices (serial text NOT NULL, name text);
CREATE UNIQUE INDEX devices_serial ON devices (serial);
ALTER TABLE devices REPLICA IDENTITY USING INDEX devices_serial;
SELECT notifier.watch('devices', channel => 'replica', payload => 'keys');
INSERT INTO devices VALUES ('SN-1', 'probe');
SELECT * FROM ev;

-- one transaction: events in order, sequence numbers counting up, one xid
BEGIN;
INSERT INTO items VALUES (3, 'fig', 1, 2);
INSERT INTO items VALUES (4, 'kiwi', 1, 2);
UPDATE items SET qty = 9 WHERE id = 3;
COMMIT;
CREATE TEMP TABLE got AS SELECT * FROM events();
SELECT masked(payload) FROM got WHERE channel = 'keys';
SELECT count(DISTINCT payload::json->>'xid') AS xids,
	   bool_and(payload::json->>'id' LIKE (payload::json->>'xid') || '.%') AS id_has_xid,
	   bool_and(payload::json->>'ts' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$') AS ts_format
  FROM got;
BEGIN;
INSERT INTO items VALUES (5, 'lime', 1, 2);
SELECT pg_current_xact_id()::text AS xid \gset
COMMIT;
SELECT (payload::json->>'xid') = :'xid' AS xid_matches FROM events() WHERE channel = 'keys';

-- rolled-back work, whole or to a savepoint, sends nothing
BEGIN;
INSERT INTO items VALUES (6, 'plum', 1, 1);
ROLLBACK;
BEGIN;
INSERT INTO items VALUES (7, 'date', 1, 1);
SAVEPOINT a;
INSERT INTO items VALUES (8, 'nope', 1, 1);
SAVEPOINT b;
UPDATE items SET qty = 100 WHERE id = 7;
ROLLBACK TO SAVEPOINT a;
SAVEPOINT c;
UPDATE items SET qty = 2 WHERE id = 7;
RELEASE SAVEPOINT c;
COMMIT;
SELECT * FROM ev WHERE channel = 'row';

-- a PL/pgSQL exception block is a subtransaction too
DO $$
BEGIN
	INSERT INTO items VALUES (9, 'lost', 1, 1);
	PERFORM 1 / 0;
EXCEPTION WHEN division_by_zero THEN
	INSERT INTO items VALUES (10, 'kept', 1, 1);
END
$$;
SELECT * FROM ev WHERE channel = 'row';

-- PREPARE TRANSACTION after a watched change fails, as with NOTIFY
BEGIN;
INSERT INTO items VALUES (11, 'prepared', 1, 1);
PREPARE TRANSACTION 'notifier_test';
SELECT count(*) FROM items WHERE id = 11;
SELECT count(*) FROM pg_prepared_xacts;
SELECT * FROM ev;

-- several rows in one statement
UPDATE items SET price = price * 2 WHERE id IN (3, 4);
SELECT * FROM ev WHERE channel = 'diff';

DROP TABLE items, lines, logbook, devices;
