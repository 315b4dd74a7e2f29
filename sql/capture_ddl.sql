--
-- capture across DDL, renames and TRUNCATE, within one session
--
-- Rows held for coalescing survive DDL of their table in the same
-- transaction: each row is read with the table version it was formed with
-- (0.1 read it with the version of the first change: a crash for int ->
-- text, backend memory sent to LISTEN clients for text -> int).  The event
-- is that of the last change's version: its names, columns and key; a
-- column only one row has counts as changed and is absent from the other
-- row's object; a column whose type changed counts as changed.
--
SELECT listen('ddl_full', 'ddl_diff', 'ddl_row', 'ord', 'ord_stmt', 'ord_raw',
			  'ex', 'sch_r');
-- run statements as one transaction
CREATE PROCEDURE xact(VARIADIC stmts text[]) LANGUAGE plpgsql AS $$
DECLARE
	stmt text;
BEGIN
	FOREACH stmt IN ARRAY stmts LOOP
		EXECUTE stmt;
	END LOOP;
	COMMIT;
END
$$;
CREATE TABLE ddl (id int PRIMARY KEY, s text, n int, secret text);
INSERT INTO ddl VALUES (1, 'one', 5, 'x');
SELECT notifier.watch('ddl', channel => 'ddl_full', payload => 'full', exclude => ARRAY['secret']);
SELECT notifier.watch('ddl', channel => 'ddl_diff', payload => 'diff', exclude => ARRAY['secret']);
SELECT notifier.watch('ddl', channel => 'ddl_row', exclude => ARRAY['secret']);

-- ALTER ... TYPE int -> text between two changes of a held row
CALL xact($$UPDATE ddl SET s = 'two' WHERE id = 1$$,
		  $$ALTER TABLE ddl ALTER n TYPE text$$,
		  $$UPDATE ddl SET n = 'hello world' WHERE id = 1$$);
SELECT * FROM ev;

-- ALTER ... TYPE text -> int
CALL xact($$UPDATE ddl SET s = 'three' WHERE id = 1$$,
		  $$ALTER TABLE ddl ALTER n TYPE int USING 7$$,
		  $$UPDATE ddl SET n = 8 WHERE id = 1$$);
SELECT * FROM ev;

-- a type change alone is a change (int -> bigint, same value)
CALL xact($$UPDATE ddl SET s = 'four' WHERE id = 1$$,
		  $$ALTER TABLE ddl ALTER n TYPE bigint$$,
		  $$UPDATE ddl SET s = 'five' WHERE id = 1$$);
SELECT * FROM ev;

-- DROP COLUMN: the column is in no object of the event
CALL xact($$UPDATE ddl SET n = 9 WHERE id = 1$$,
		  $$ALTER TABLE ddl DROP COLUMN n$$,
		  $$UPDATE ddl SET s = 'six' WHERE id = 1$$);
SELECT * FROM ev;

-- ADD COLUMN: in "row", not in "old", changed
CALL xact($$UPDATE ddl SET s = 'seven' WHERE id = 1$$,
		  $$ALTER TABLE ddl ADD COLUMN m int DEFAULT 3$$,
		  $$UPDATE ddl SET s = 'eight' WHERE id = 1$$);
SELECT * FROM ev;

-- RENAME COLUMN: the new name in both objects; the excluded column renamed
-- stays excluded
CALL xact($$UPDATE ddl SET s = 'nine' WHERE id = 1$$,
		  $$ALTER TABLE ddl RENAME s TO title$$,
		  $$ALTER TABLE ddl RENAME secret TO hidden$$,
		  $$UPDATE ddl SET title = 'ten', hidden = 'y' WHERE id = 1$$);
SELECT * FROM ev;

-- a DELETE after DDL: the old row read with its own version
CALL xact($$INSERT INTO ddl VALUES (2, 'two', 'z', 4)$$);
SELECT count(*) FROM ev;
CALL xact($$UPDATE ddl SET m = 5 WHERE id = 2$$,
		  $$ALTER TABLE ddl ALTER m TYPE text$$,
		  $$DELETE FROM ddl WHERE id = 2$$);
SELECT * FROM ev;

-- the same in outbox mode
CREATE VIEW outbox_ddl AS
SELECT channel, masked(event::text) AS event FROM notifier.outbox ORDER BY id;
SELECT notifier.unwatch('ddl', 'ddl_diff');
SELECT notifier.unwatch('ddl', 'ddl_row');
SELECT notifier.watch('ddl', channel => 'ddl_full', payload => 'full',
					  exclude => ARRAY['hidden'], delivery => 'outbox');
TRUNCATE notifier.outbox;
BEGIN;
UPDATE ddl SET title = 'eleven' WHERE id = 1;
ALTER TABLE ddl ALTER m TYPE text;
UPDATE ddl SET m = 'three' WHERE id = 1;
ALTER TABLE ddl ALTER m TYPE int USING 4;
ALTER TABLE ddl DROP COLUMN title;
ALTER TABLE ddl ADD COLUMN title text DEFAULT 'new';
UPDATE ddl SET m = 5 WHERE id = 1;
COMMIT;
SELECT * FROM outbox_ddl;
SELECT * FROM ev;
TRUNCATE notifier.outbox;

--
-- exclude is tracked by attribute number: a renamed column stays excluded,
-- and a new column that takes the excluded name is excluded too
--
CREATE TABLE ex (id int PRIMARY KEY, card text, note text);
SELECT notifier.watch('ex', exclude => ARRAY['card']);
INSERT INTO ex VALUES (1, '4111', 'a');
ALTER TABLE ex RENAME card TO card_legacy;
ALTER TABLE ex ADD COLUMN card text;
SELECT channel, exclude FROM notifier.watches WHERE "table" = 'ex'::regclass;
INSERT INTO ex VALUES (2, '4222', 'b', '4333');
UPDATE ex SET card_legacy = '4444', card = '4555', note = 'c' WHERE id = 1;
SELECT * FROM ev;
ALTER TABLE ex DROP COLUMN card;
SELECT channel, exclude FROM notifier.watches WHERE "table" = 'ex'::regclass;
UPDATE ex SET card_legacy = '4666', note = 'd' WHERE id = 2;
SELECT * FROM ev;
ALTER TABLE ex DROP COLUMN card_legacy;
SELECT channel, exclude FROM notifier.watches WHERE "table" = 'ex'::regclass;
-- on a partition whose columns are in another order, the same column
CREATE TABLE exp (id int PRIMARY KEY, card text, note text) PARTITION BY RANGE (id);
CREATE TABLE exp1 (note text, id int NOT NULL, card text);
ALTER TABLE exp ATTACH PARTITION exp1 FOR VALUES FROM (0) TO (100);
SELECT notifier.watch('exp', channel => 'ex', exclude => ARRAY['card']);
ALTER TABLE exp RENAME card TO card_legacy;
INSERT INTO exp VALUES (1, '4777', 'e');
SELECT * FROM ev;
-- a trigger of 0.1 (names only) still works, by name
CREATE TABLE ex01 (id int PRIMARY KEY, card text);
CREATE TRIGGER notifier_ex AFTER INSERT ON ex01 FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=ex', 'exclude=card');
INSERT INTO ex01 VALUES (1, '4111');
ALTER TABLE ex01 RENAME card TO card_legacy;
INSERT INTO ex01 VALUES (2, '4222');		-- the name is gone: refused
SELECT * FROM ev;

--
-- events of a transaction keep the order of their changes, TRUNCATE included
--
CREATE TABLE ord (id int PRIMARY KEY, v text);
CREATE TABLE ord_nokey (v text);
SELECT notifier.watch('ord');
SELECT notifier.watch('ord', channel => 'ord_stmt', level => 'statement');
SELECT notifier.watch('ord_nokey', channel => 'ord_raw');
CALL xact($$INSERT INTO ord VALUES (1, 'a')$$,
		  $$TRUNCATE ord$$);
SELECT * FROM ev;
-- a row changed after a TRUNCATE is not merged with its state before it
CALL xact($$INSERT INTO ord VALUES (1, 'a')$$,
		  $$TRUNCATE ord$$,
		  $$INSERT INTO ord VALUES (1, 'b')$$,
		  $$UPDATE ord SET v = 'c' WHERE id = 1$$);
SELECT * FROM ev;
-- changes that are not coalesced keep their place behind held ones
CALL xact($$INSERT INTO ord VALUES (2, 'a')$$,
		  $$INSERT INTO ord_nokey VALUES ('x')$$,
		  $$INSERT INTO ord VALUES (3, 'a')$$,
		  $$UPDATE ord SET v = 'b' WHERE id = 2$$);
SELECT * FROM ev;
-- a TRUNCATE rolled back to a savepoint leaves nothing
BEGIN;
INSERT INTO ord VALUES (4, 'a');
SAVEPOINT s;
TRUNCATE ord;
ROLLBACK TO s;
INSERT INTO ord VALUES (5, 'a');
COMMIT;
SELECT * FROM ev;
-- the cap: what is held goes out first
SET pg_notifier.max_coalesce_events = 1;
CALL xact($$UPDATE ord SET v = 'x' WHERE id = 4$$,
		  $$UPDATE ord SET v = 'x' WHERE id = 5$$,
		  $$UPDATE ord SET v = 'y' WHERE id = 4$$);
RESET pg_notifier.max_coalesce_events;
SELECT * FROM ev;
-- outbox mode
SELECT notifier.unwatch('ord', 'ord_stmt');
SELECT notifier.watch('ord', delivery => 'outbox');
SELECT notifier.watch('ord_nokey', channel => 'ord_raw', delivery => 'outbox');
CALL xact($$INSERT INTO ord VALUES (6, 'a')$$,
		  $$INSERT INTO ord_nokey VALUES ('y')$$,
		  $$TRUNCATE ord$$,
		  $$INSERT INTO ord VALUES (6, 'b')$$);
SELECT * FROM outbox_ddl;
TRUNCATE notifier.outbox;

--
-- renames reach the events of a session that has sent some already
--
CREATE SCHEMA sch;
CREATE TABLE sch.r (id int PRIMARY KEY);
SELECT notifier.watch('sch.r', channel => 'sch_r');
INSERT INTO sch.r VALUES (1);
ALTER SCHEMA sch RENAME TO sch2;
INSERT INTO sch2.r VALUES (2);
ALTER TABLE sch2.r RENAME TO r2;
INSERT INTO sch2.r2 VALUES (3);
SELECT * FROM ev;

-- a column added with a default before the transaction: held rows written
-- before it read as the default, as the table reads them (0.1: null)
CREATE TABLE miss (id int PRIMARY KEY, s text);
INSERT INTO miss VALUES (1, 'a');
ALTER TABLE miss ADD COLUMN m int DEFAULT 3;
SELECT notifier.watch('miss', channel => 'ddl_diff', payload => 'diff');
SELECT notifier.watch('miss', channel => 'ddl_full', payload => 'full');
CALL xact($$UPDATE miss SET s = 'b'$$);
SELECT * FROM ev;
