--
-- the append path: a row's first change in a transaction is held without a
-- lookup; a later change of the row finds it, in every level
--
SELECT listen('ap');
CREATE TABLE ap (id int PRIMARY KEY, v int);
INSERT INTO ap SELECT g, 0 FROM generate_series(1, 6) g;
SELECT notifier.watch('ap', payload => 'diff');
SELECT * FROM ev;

-- firsts and seconds interleaved: one event per row, in the order of first
-- changes (1, 7, 2, 3), row 1 merged after the others were appended
BEGIN;
UPDATE ap SET v = 1 WHERE id = 1;
INSERT INTO ap VALUES (7, 0);
UPDATE ap SET v = 2 WHERE id = 1;
UPDATE ap SET v = 1 WHERE id IN (2, 3);
UPDATE ap SET v = 3 WHERE id = 7;
COMMIT;
SELECT * FROM ev;

-- a savepoint changing again what its parent appended: merged at RELEASE
BEGIN;
UPDATE ap SET v = 10 WHERE id IN (1, 2);
SAVEPOINT s;
UPDATE ap SET v = 11 WHERE id = 2;
UPDATE ap SET v = 10 WHERE id = 4;
RELEASE SAVEPOINT s;
UPDATE ap SET v = 12 WHERE id = 4;
COMMIT;
SELECT * FROM ev;

-- what a rolled-back savepoint appended is gone; the parent's stays
BEGIN;
UPDATE ap SET v = 20 WHERE id = 5;
SAVEPOINT s;
UPDATE ap SET v = 20 WHERE id = 6;
INSERT INTO ap VALUES (8, 0);
ROLLBACK TO SAVEPOINT s;
UPDATE ap SET v = 21 WHERE id = 5;
COMMIT;
SELECT * FROM ev;

-- DELETE then INSERT of the key: one UPDATE; an INSERT after a DELETE is
-- looked up, also in a savepoint
BEGIN;
DELETE FROM ap WHERE id = 3;
SAVEPOINT s;
INSERT INTO ap VALUES (3, 30);
RELEASE SAVEPOINT s;
INSERT INTO ap VALUES (9, 0);
COMMIT;
SELECT * FROM ev;

-- changes of key (DELETE of the old, INSERT of the new), each merged: row 10
-- inserted and moved to 110 is an INSERT of 110; row 1, moved away and
-- back, is nothing
BEGIN;
INSERT INTO ap VALUES (10, 0);
UPDATE ap SET id = id + 100 WHERE id IN (1, 10);
UPDATE ap SET id = id - 100 WHERE id = 101;
COMMIT;
SELECT * FROM ev;

-- rows this transaction wrote frozen (COPY FREEZE) are still its own: the
-- UPDATE merges into their INSERT
BEGIN;
TRUNCATE ap;
COPY ap FROM stdin (FREEZE);
1	0
2	0
\.
UPDATE ap SET v = 5 WHERE id = 1;
COMMIT;
SELECT * FROM ev;

SELECT notifier.unwatch('ap');
DROP TABLE ap;
