--
-- coalescing: one event per row and transaction; statement level
--
SELECT listen('acct', 'raw', 'diff', 'keys', 'full', 'stmt', 'big');
CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int, note text);
SELECT notifier.watch('acct');
SELECT channel, dedup, level FROM notifier.watches;

-- INSERT ... UPDATE -> INSERT with the final row
BEGIN;
INSERT INTO acct VALUES (1, 'ann', 10);
UPDATE acct SET balance = 20 WHERE id = 1;
UPDATE acct SET balance = 30 WHERE id = 1;
COMMIT;
SELECT * FROM ev;

-- INSERT ... DELETE -> nothing
BEGIN;
INSERT INTO acct VALUES (2, 'bob', 1);
UPDATE acct SET balance = 2 WHERE id = 2;
DELETE FROM acct WHERE id = 2;
COMMIT;
SELECT * FROM ev;

-- UPDATE ... UPDATE -> UPDATE (first old, last new)
BEGIN;
UPDATE acct SET balance = 31 WHERE id = 1;
UPDATE acct SET owner = 'anne' WHERE id = 1;
UPDATE acct SET balance = 32 WHERE id = 1;
COMMIT;
SELECT * FROM ev;

-- UPDATE ... UPDATE ending where it began -> nothing
BEGIN;
UPDATE acct SET balance = 99 WHERE id = 1;
UPDATE acct SET balance = 32 WHERE id = 1;
COMMIT;
SELECT * FROM ev;

-- UPDATE ... DELETE -> DELETE (of the row as it was before the transaction)
INSERT INTO acct VALUES (3, 'cy', 5);
SELECT * FROM ev;
BEGIN;
UPDATE acct SET balance = 6 WHERE id = 3;
DELETE FROM acct WHERE id = 3;
COMMIT;
SELECT * FROM ev;

-- DELETE ... INSERT -> UPDATE
BEGIN;
DELETE FROM acct WHERE id = 1;
INSERT INTO acct VALUES (1, 'anne', 40);
COMMIT;
SELECT * FROM ev;

-- DELETE ... INSERT of the same row -> nothing
BEGIN;
DELETE FROM acct WHERE id = 1;
INSERT INTO acct VALUES (1, 'anne', 40);
COMMIT;
SELECT * FROM ev;

-- a change of key: DELETE of the old key, INSERT of the new, each merged on its own
BEGIN;
UPDATE acct SET balance = 41 WHERE id = 1;
UPDATE acct SET id = 10 WHERE id = 1;
UPDATE acct SET balance = 42 WHERE id = 10;
COMMIT;
SELECT * FROM ev;

-- events in the order of each row's first change
BEGIN;
INSERT INTO acct VALUES (20, 'x', 1);
INSERT INTO acct VALUES (21, 'y', 1);
UPDATE acct SET balance = 2 WHERE id = 20;
INSERT INTO acct VALUES (22, 'z', 1);
UPDATE acct SET balance = 2 WHERE id = 21;
COMMIT;
SELECT * FROM ev;

-- different transactions are never merged
UPDATE acct SET balance = 3 WHERE id = 20;
UPDATE acct SET balance = 4 WHERE id = 20;
SELECT * FROM ev;

-- savepoints: a rolled-back subtransaction's changes never appear, released ones merge
BEGIN;
UPDATE acct SET balance = 5 WHERE id = 20;
SAVEPOINT a;
UPDATE acct SET balance = 500 WHERE id = 20;
INSERT INTO acct VALUES (30, 'gone', 1);
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
UPDATE acct SET owner = 'xx' WHERE id = 20;
SAVEPOINT c;
UPDATE acct SET balance = 6 WHERE id = 20;
DELETE FROM acct WHERE id = 22;
RELEASE SAVEPOINT c;
SAVEPOINT d;
UPDATE acct SET balance = 7 WHERE id = 21;
ROLLBACK TO SAVEPOINT d;
RELEASE SAVEPOINT b;
COMMIT;
SELECT * FROM ev;

-- a savepoint rolled back after the row was deleted inside it: the row stays as it was
BEGIN;
INSERT INTO acct VALUES (31, 'sp', 1);
SAVEPOINT a;
DELETE FROM acct WHERE id = 31;
ROLLBACK TO SAVEPOINT a;
UPDATE acct SET balance = 2 WHERE id = 31;
COMMIT;
SELECT * FROM ev;

-- PL/pgSQL exception blocks are subtransactions too
DO $$
BEGIN
	FOR i IN 1..3 LOOP
		BEGIN
			UPDATE acct SET balance = balance + 1 WHERE id = 31;
			IF i = 2 THEN RAISE division_by_zero; END IF;
		EXCEPTION WHEN division_by_zero THEN NULL;
		END;
	END LOOP;
END
$$;
SELECT * FROM ev;

-- a transaction rolled back sends nothing
BEGIN;
UPDATE acct SET balance = 0;
ROLLBACK;
SELECT * FROM ev;

-- PREPARE TRANSACTION with held events fails and leaves nothing behind
BEGIN;
UPDATE acct SET balance = 1 WHERE id = 31;
PREPARE TRANSACTION 'notifier_coalesce';
SELECT count(*) AS prepared FROM pg_prepared_xacts;
SELECT balance FROM acct WHERE id = 31;
SELECT * FROM ev;

-- each payload mode applies to the merged event; watches coalesce independently
SELECT notifier.watch('acct', channel => m, payload => m) FROM unnest(ARRAY['diff', 'keys', 'full']) m;
SELECT notifier.watch('acct', channel => 'raw', dedup => false);
BEGIN;
UPDATE acct SET balance = 100, note = 'n1' WHERE id = 31;
UPDATE acct SET owner = 'o2', note = NULL WHERE id = 31;
COMMIT;
SELECT * FROM ev ORDER BY channel, event;
SELECT notifier.unwatch('acct', m) FROM unnest(ARRAY['diff', 'keys', 'full', 'raw']) m;

-- the oversize policies apply to the merged event, at commit
SELECT notifier.watch('acct', channel => 'big');
BEGIN;
UPDATE acct SET note = repeat('a', 5000) WHERE id = 31;
UPDATE acct SET note = note || repeat('b', 5000) WHERE id = 31;
COMMIT;
CREATE TEMP TABLE bigev AS SELECT payload::json AS e FROM events() WHERE channel = 'big';
SELECT e->>'op' AS op, e->>'truncated' AS truncated,
	   length(notifier.payload((e->>'ref')::bigint)->'row'->>'note') AS note_length
  FROM bigev;
SELECT notifier.watch('acct', channel => 'big', on_oversize => 'error');
BEGIN;
UPDATE acct SET note = repeat('c', 9000) WHERE id = 31;
\set VERBOSITY sqlstate
COMMIT;
\set VERBOSITY default
SELECT regexp_replace(:'LAST_ERROR_MESSAGE', 'is \d+ bytes', 'is N bytes') AS commit_error;
SELECT notifier.unwatch('acct', 'big');
SELECT length(note) FROM acct WHERE id = 31;
UPDATE acct SET note = NULL WHERE id = 31;
SELECT * FROM ev;

-- the cap: past pg_notifier.max_coalesce_events held rows, what is held is
-- sent, in order, then the new row, and holding starts again
SET pg_notifier.max_coalesce_events = 2;
BEGIN;
UPDATE acct SET balance = 1000 WHERE id = 20;		-- held
UPDATE acct SET balance = 1000 WHERE id = 21;		-- held
UPDATE acct SET balance = 1000 WHERE id = 31;		-- over the cap: 20, 21, 31 sent
UPDATE acct SET balance = 1001 WHERE id = 31;		-- held
UPDATE acct SET balance = 1001 WHERE id = 20;		-- held
COMMIT;
SELECT * FROM ev;
SET pg_notifier.max_coalesce_events = 0;		-- no coalescing at all
BEGIN;
UPDATE acct SET balance = 2000 WHERE id = 20;
UPDATE acct SET balance = 2001 WHERE id = 20;
COMMIT;
SELECT count(*) AS uncoalesced FROM events();
RESET pg_notifier.max_coalesce_events;
SET pg_notifier.max_coalesce_events = -1;

-- a table without a key is never coalesced, and still correct
CREATE TABLE nokey (a int, b text);
SELECT notifier.watch('nokey', channel => 'raw');
BEGIN;
INSERT INTO nokey VALUES (1, 'x');
UPDATE nokey SET b = 'y';
COMMIT;
SELECT * FROM ev;

-- statement level: one event per table and operation per transaction, with a count
SELECT notifier.watch('acct', channel => 'stmt', level => 'statement');
SELECT notifier.unwatch('acct');
BEGIN;
INSERT INTO acct SELECT g, 'bulk', g FROM generate_series(100, 149) g;
UPDATE acct SET balance = balance + 1 WHERE id >= 100;
UPDATE acct SET balance = balance WHERE id >= 100;		-- no-op: not counted
DELETE FROM acct WHERE id >= 140;
SAVEPOINT s;
DELETE FROM acct WHERE id >= 100;
ROLLBACK TO SAVEPOINT s;
INSERT INTO acct VALUES (150, 'one', 1);
UPDATE acct SET id = 151 WHERE id = 150;			-- a change of key: one more UPDATE
COMMIT;
SELECT * FROM ev;
TRUNCATE acct;
SELECT * FROM ev;
SELECT "table", channel, level FROM notifier.watches WHERE channel = 'stmt';

-- out-of-line (TOAST) values replaced in the transaction: the first old row is
-- still there at commit
CREATE TABLE toasty (id int PRIMARY KEY, doc text);
ALTER TABLE toasty ALTER doc SET STORAGE EXTERNAL;
SELECT notifier.watch('toasty', channel => 'full', payload => 'full');
INSERT INTO toasty VALUES (1, repeat('a', 3000));
BEGIN;
UPDATE toasty SET doc = repeat('b', 3000);
UPDATE toasty SET doc = repeat('c', 3000);
COMMIT;
SELECT e->>'op' AS op, left(e->'old'->>'doc', 3) AS old_doc, length(e->'old'->>'doc') AS old_len,
	   left(e->'row'->>'doc', 3) AS new_doc, length(e->'row'->>'doc') AS new_len
  FROM (SELECT payload::json AS e FROM events()) s;
DROP TABLE toasty;

-- bad values
SELECT notifier.watch('acct', level => 'transaction');
SELECT notifier.watch('acct', dedup => NULL, level => NULL);
SELECT channel, dedup, level FROM notifier.watches ORDER BY channel;
CREATE TRIGGER bad AFTER INSERT ON acct FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('coalesce=maybe');
INSERT INTO acct VALUES (500, 'x', 1);
DROP TRIGGER bad ON acct;
DROP TABLE acct, nokey;
