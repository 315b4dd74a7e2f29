--
-- Hardening of issue 13 that needs no worker: the reserved control channel,
-- and credentials of webhook routes hidden from roles that cannot manage
-- routes (pg_monitor members).
--

-- the control channel is no watch channel and no route channel
CREATE TABLE hard_t (id int PRIMARY KEY, v text);
SELECT try($$SELECT notifier.watch('hard_t', channel => 'pg_notifier_control')$$);
SELECT try($$SELECT notifier.add_queue('pg_notifier_control')$$);
SELECT try($$SELECT notifier.add_webhook('pg_notifier_control', 'http://127.0.0.1:9/')$$);
-- not even as the default channel, the table's name
CREATE TABLE pg_notifier_control (id int PRIMARY KEY);
SELECT try($$SELECT notifier.watch('pg_notifier_control')$$);
SELECT try($$SELECT notifier.watch('pg_notifier_control', channel => 'control_table')$$);
SELECT notifier.unwatch('pg_notifier_control', 'control_table');
-- nor through a hand-made trigger: refused when it fires
CREATE TRIGGER hand AFTER INSERT ON hard_t FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=pg_notifier_control');
SELECT try($$INSERT INTO hard_t VALUES (1, 'x')$$);
DROP TRIGGER hand ON hard_t;
DROP TABLE pg_notifier_control;

-- a webhook with credentials in its URL and headers
SELECT notifier.add_webhook('hard_w',
		'http://alice:s3cret@127.0.0.1:9/hook?token=t0ken&x=1#frag',
		headers => '{"Authorization": "Bearer abc", "X-Api-Key": "k3y"}',
		secret => 'whsec_c2VjcmV0') AS hard_route \gset
SELECT notifier.add_webhook('hard_plain', 'http://127.0.0.1:9/plain') AS plain_route \gset

-- what a role sees of them
\set seen 'SELECT l.channel, l.target, s.target AS stats_target, l.headers, l.secret FROM notifier.route_list l JOIN notifier.stats s ON s.route_id = l.id WHERE l.id IN (' :hard_route ', ' :plain_route ') ORDER BY l.id'

CREATE ROLE hard_monitor IN ROLE pg_monitor;
CREATE ROLE hard_manager IN ROLE pg_monitor;
GRANT EXECUTE ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)
	TO hard_manager;

-- pg_monitor: masked
SET ROLE hard_monitor;
:seen;
-- nothing else shows them
SELECT try($$SELECT * FROM notifier.routes$$);
RESET ROLE;

-- a role that can manage routes (and superusers): in full
SET ROLE hard_manager;
:seen;
RESET ROLE;
SELECT channel, target, headers FROM notifier.route_list
 WHERE id = :hard_route;

-- the masking of URLs
SELECT u, notifier.masked_url(u)
  FROM (VALUES ('https://h.example/p'),
			   ('https://u@h.example:8443/p'),
			   ('https://u:p@ss@h.example/p?a=1'),
			   ('http://h.example/p?token=x'),
			   ('http://h.example/p#token=x'),
			   ('http://h.example/p/user@x')) v(u);

SELECT notifier.remove_route(:hard_route);
SELECT notifier.remove_route(:plain_route);
REVOKE EXECUTE ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)
	FROM hard_manager;
DROP ROLE hard_monitor;
DROP ROLE hard_manager;
DROP TABLE hard_t;
