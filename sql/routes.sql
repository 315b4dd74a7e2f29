--
-- routes: add_queue(), remove_route(), route_list, pop(), and their errors.
-- (The worker is not running for this database: what it does is tested by
-- test/integration/test_worker*.py.)
--
\set VERBOSITY default

SELECT notifier.add_queue('orders') AS orders_route \gset
CREATE TABLE my_queue (
	id			bigint GENERATED ALWAYS AS IDENTITY,
	channel		varchar(63),
	payload		json,
	received_at timestamptz,
	note		text NOT NULL DEFAULT 'none'
);
SELECT notifier.add_queue('orders', 'my_queue') AS my_route \gset
SELECT channel, kind, target FROM notifier.route_list ORDER BY id;

-- bad arguments
SELECT notifier.add_queue(NULL);
SELECT notifier.add_queue('c', NULL);
SELECT notifier.add_queue('');
SELECT notifier.add_queue(repeat('c', 64));
SELECT notifier.add_queue('c', 'no_such_table');
CREATE SEQUENCE q_seq;
SELECT notifier.add_queue('c', 'q_seq');
CREATE VIEW q_view AS SELECT * FROM notifier.queue;
SELECT notifier.add_queue('c', 'q_view');
CREATE TABLE q_nochannel (payload jsonb);
SELECT notifier.add_queue('c', 'q_nochannel');
CREATE TABLE q_nopayload (channel text);
SELECT notifier.add_queue('c', 'q_nopayload');
CREATE TABLE q_intpayload (channel text, payload int);
SELECT notifier.add_queue('c', 'q_intpayload');
CREATE TABLE q_intchannel (channel int, payload jsonb);
SELECT notifier.add_queue('c', 'q_intchannel');
CREATE TABLE q_textreceived (channel text, payload jsonb, received_at text);
SELECT notifier.add_queue('c', 'q_textreceived');
CREATE TABLE q_notnull (channel text, payload jsonb, tenant int NOT NULL);
SELECT notifier.add_queue('c', 'q_notnull');
SELECT notifier.remove_route(NULL);
SELECT notifier.remove_route(-1);
SELECT * FROM notifier.pop(max => 0);
SELECT * FROM notifier.pop(max => NULL);

-- nothing was added by the failed calls
SELECT count(*) FROM notifier.routes;

-- managing routes needs superuser or a grant; the tables are not public
CREATE ROLE notifier_user;
GRANT INSERT ON my_queue TO notifier_user;
SET ROLE notifier_user;
SELECT notifier.add_queue('c');
SELECT notifier.remove_route(:orders_route);
SELECT * FROM notifier.routes;
SELECT * FROM notifier.route_list;
SELECT * FROM notifier.queue;
SELECT * FROM notifier.pop();
RESET ROLE;
-- with EXECUTE granted: only into a table the role may insert into
GRANT EXECUTE ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer) TO notifier_user;
SET ROLE notifier_user;
SELECT notifier.add_queue('c');
SELECT notifier.add_queue('c', 'my_queue') > 0 AS added;
RESET ROLE;
REVOKE ALL ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer) FROM notifier_user;
REVOKE ALL ON my_queue FROM notifier_user;
DROP ROLE notifier_user;

-- pop: the oldest first, per channel or all, removed
INSERT INTO notifier.queue (channel, payload)
SELECT CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END, jsonb_build_object('n', g)
  FROM generate_series(1, 7) g;
SELECT channel, payload FROM notifier.pop('odd', 2);
SELECT channel, payload FROM notifier.pop(max => 3);
SELECT channel, payload FROM notifier.pop();
SELECT count(*) FROM notifier.queue;

-- removing routes
SELECT notifier.remove_route(:my_route);
SELECT notifier.remove_route(:my_route);
SELECT channel, kind, target FROM notifier.route_list ORDER BY id;
DELETE FROM notifier.routes;
DROP TABLE my_queue, q_nochannel, q_nopayload, q_intpayload, q_intchannel,
	q_textreceived, q_notnull;
DROP VIEW q_view;
DROP SEQUENCE q_seq;
