--
-- partitioned tables: watch the parent; events name the parent
--
SELECT listen('measurements');
CREATE TABLE measurements (id int, at date, value numeric, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
SELECT notifier.watch('measurements');
-- a partition attached later, with its columns in another order, gets the trigger too
CREATE TABLE measurements_2026 (value numeric, at date NOT NULL, id int NOT NULL);
ALTER TABLE measurements ATTACH PARTITION measurements_2026
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT "table", channel, triggers FROM notifier.watches;

INSERT INTO measurements VALUES (1, '2025-06-01', 1.5), (2, '2026-06-01', 2.5);
UPDATE measurements SET value = value + 1;
-- moving a row to another partition: DELETE then INSERT, as PostgreSQL does it
UPDATE measurements SET at = '2026-07-01' WHERE id = 1;
DELETE FROM measurements WHERE id = 2;
TRUNCATE measurements;
SELECT * FROM ev;

-- a partition written to directly still reports the parent
INSERT INTO measurements_2026 VALUES (9.9, '2026-01-02', 3);
SELECT * FROM ev;

-- renaming the parent is seen by the partitions' triggers
ALTER TABLE measurements RENAME TO readings;
INSERT INTO readings VALUES (4, '2025-02-02', 0);
SELECT * FROM ev;
SELECT notifier.unwatch('readings', 'measurements');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgfoid = 'notifier.notify_change()'::regprocedure;
DROP TABLE readings;
