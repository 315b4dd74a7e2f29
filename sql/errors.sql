--
-- bad input: every one answered by a clear error, nothing half done
--
CREATE TABLE t (id int PRIMARY KEY, a text, b int);
CREATE TABLE nokey (a text);
CREATE VIEW v AS SELECT * FROM t;
CREATE MATERIALIZED VIEW mv AS SELECT * FROM t;
CREATE SEQUENCE s;
CREATE FOREIGN DATA WRAPPER dummy;
CREATE SERVER dummy_srv FOREIGN DATA WRAPPER dummy;
CREATE FOREIGN TABLE ft (a int) SERVER dummy_srv;
CREATE TYPE ctype AS (x int);
\set VERBOSITY default

-- the table
SELECT notifier.watch(NULL);
SELECT notifier.watch('no_such_table');
SELECT notifier.watch('v');
SELECT notifier.watch('mv');
SELECT notifier.watch('s');
SELECT notifier.watch('ft');
SELECT notifier.watch('ctype');
SELECT notifier.watch('pg_class');
SELECT notifier.watch('notifier.payloads');
SELECT notifier.unwatch(NULL);

-- channel
SELECT notifier.watch('t', channel => '');
SELECT notifier.watch('t', channel => repeat('x', 64));
SELECT notifier.watch('t', channel => repeat('é', 32));

-- payload and on_oversize
SELECT notifier.watch('t', payload => 'everything');
SELECT notifier.watch('t', payload => '');
SELECT notifier.watch('t', on_oversize => 'truncate');
SELECT notifier.watch('nokey', payload => 'keys');

-- columns and exclude
SELECT notifier.watch('t', columns => ARRAY['nope']);
SELECT notifier.watch('t', columns => ARRAY[]::text[]);
SELECT notifier.watch('t', columns => ARRAY['a', NULL]);
SELECT notifier.watch('t', columns => ARRAY[['a'], ['b']]);
SELECT notifier.watch('t', columns => ARRAY['ctid']);
SELECT notifier.watch('t', exclude => ARRAY['nope']);
SELECT notifier.watch('t', exclude => ARRAY['id']);
SELECT notifier.watch('t', columns => ARRAY['a', 'b'], exclude => ARRAY['b']);
SELECT notifier.watch('t', columns => ARRAY['A']);

-- events
SELECT notifier.watch('t', events => ARRAY['upsert']);
SELECT notifier.watch('t', events => ARRAY[]::text[]);
SELECT notifier.watch('t', events => ARRAY['insert', NULL]);

-- condition
SELECT notifier.watch('t', condition => '');
SELECT notifier.watch('t', condition => 'NEW.a = ');
SELECT notifier.watch('t', condition => 'true) EXECUTE FUNCTION pg_catalog.now(); --');
SELECT notifier.watch('t', condition => '1) UNION SELECT (1');
SELECT notifier.watch('t', condition => 'NEW.nope > 1');
SELECT notifier.watch('t', condition => 'NEW.b');
SELECT notifier.watch('t', condition => 'NEW.b > 1');				-- DELETE has no NEW
SELECT notifier.watch('t', condition => 'OLD.b > 1', events => ARRAY['insert']);	-- INSERT has no OLD

-- nothing above created a trigger
SELECT count(*) AS watches FROM notifier.watches;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 't'::regclass;

-- triggers written by hand: the arguments are checked on first use
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('channel');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('=x');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('colour=blue');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('channel=a', 'channel=b');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('columns=a,,b');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('columns="a');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change('condition=NEW.b > 1');
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION notifier.notify_change();
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
CREATE TRIGGER bad AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION notifier.notify_change();
INSERT INTO t VALUES (1);
DROP TRIGGER bad ON t;
SELECT notifier.notify_change();
SELECT count(*) AS rows_written FROM t;

-- the other functions
SELECT notifier.watch_options(0);
SELECT notifier.payload(NULL);
SELECT count(*) >= 0 AS superuser_reads FROM notifier.payloads;
CREATE ROLE notifier_reader;
SET ROLE notifier_reader;
SELECT * FROM notifier.payloads;
INSERT INTO notifier.payloads (event) VALUES ('{}');
RESET ROLE;
DROP ROLE notifier_reader;

DROP MATERIALIZED VIEW mv;
DROP VIEW v;
DROP TABLE t, nokey;
DROP SEQUENCE s;
DROP FOREIGN TABLE ft;
DROP SERVER dummy_srv;
DROP FOREIGN DATA WRAPPER dummy;
DROP TYPE ctype;
