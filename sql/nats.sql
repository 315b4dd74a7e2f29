--
-- nats: add_nats() and its errors, route_list (token and password masked).
-- (Delivery needs the worker and nats-server: test/integration/test_nats.py.)
--
\set VERBOSITY default

SELECT notifier.add_nats('orders', 'nats://127.0.0.1:4222, nats://[::1]:4223,nats://nats.example.com',
	subject => 'app.{schema}.{table}.{op}', token => 's3cret-token',
	headers => '{"X-Team": "billing"}', max_attempts => 5, timeout_ms => 2000,
	concurrency => 500, ordered => 'key') > 0 AS added;
SELECT notifier.add_nats('orders', 'tls://nats.example.com:4443', username => 'app',
	password => 's3cret-password', tls_ca_file => '/dev/null',
	tls_cert_file => '/dev/null', tls_key_file => '/dev/null') > 0 AS added;
SELECT notifier.add_nats('orders', 'nats://127.0.0.1', creds_file => '/dev/null',
	ordered => true) > 0 AS added;
SELECT channel, kind, target, subject, headers, secret, batch_size, max_attempts,
	   timeout_ms, concurrency, ordered
  FROM notifier.route_list WHERE kind = 'nats' ORDER BY id;
SELECT subject, nats_username, creds_file, tls_ca_file, tls_cert_file, tls_key_file
  FROM notifier.routes WHERE kind = 'nats' ORDER BY id;
-- the token and the password are shown to no one: not in route_list, not in stats
SELECT count(*) AS shown FROM notifier.route_list r
 WHERE r::text LIKE '%s3cret%';
SELECT count(*) AS shown FROM notifier.stats s
 WHERE s::text LIKE '%s3cret%';
-- set_secret() is for webhooks (wrong_object_type; the message names the route id)
\set VERBOSITY sqlstate
SELECT notifier.set_secret(id, 'x') FROM notifier.routes WHERE kind = 'nats' ORDER BY id LIMIT 1;
\set VERBOSITY default

-- NULLs
SELECT notifier.add_nats(NULL, 'nats://h');
SELECT notifier.add_nats('c', NULL);
SELECT notifier.add_nats('c', 'nats://h', subject => NULL);
SELECT notifier.add_nats('c', 'nats://h', headers => NULL);
SELECT notifier.add_nats('c', 'nats://h', max_attempts => NULL);
SELECT notifier.add_nats('c', 'nats://h', timeout_ms => NULL);
SELECT notifier.add_nats('c', 'nats://h', concurrency => NULL);
SELECT notifier.add_nats('c', 'nats://h', ordered => NULL);
-- channel
SELECT notifier.add_nats('', 'nats://h');
SELECT notifier.add_nats(repeat('c', 64), 'nats://h');
-- urls
SELECT notifier.add_nats('c', '');
SELECT notifier.add_nats('c', ' , ');
SELECT notifier.add_nats('c', 'h:4222');
SELECT notifier.add_nats('c', 'http://h:4222');
SELECT notifier.add_nats('c', 'nats://');
SELECT notifier.add_nats('c', 'nats://user:pw@h:4222');
SELECT notifier.add_nats('c', 'nats://h:0');
SELECT notifier.add_nats('c', 'nats://h:65536');
SELECT notifier.add_nats('c', 'nats://h:');
SELECT notifier.add_nats('c', 'nats://h:4222/path');
SELECT notifier.add_nats('c', 'nats://h?x=1');
SELECT notifier.add_nats('c', 'nats://[zz]:4222');
SELECT notifier.add_nats('c', 'nats://h a');
SELECT notifier.add_nats('c', 'nats://h:4222,tls://h:4223');
SELECT notifier.add_nats('c', (SELECT string_agg('nats://h' || g, ',') FROM generate_series(1, 17) g));
SELECT notifier.add_nats('c', 'nats://' || repeat('h', 3000));
SELECT notifier.add_nats('c', 'nats://' || repeat('h', 300) || '@x');
-- subject
SELECT notifier.add_nats('c', 'nats://h', subject => '');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a..b');
SELECT notifier.add_nats('c', 'nats://h', subject => '.a');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.*');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.>');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a b');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.é');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.{key}');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.{table');
SELECT notifier.add_nats('c', 'nats://h', subject => 'a.table}');
SELECT notifier.add_nats('c', 'nats://h', subject => repeat('a', 256));
SELECT notifier.add_nats('c', 'nats://h', subject => 'x{channel}y.{op}{op}') > 0 AS added;
-- auth
SELECT notifier.add_nats('c', 'nats://h', token => '');
SELECT notifier.add_nats('c', 'nats://h', token => repeat('t', 5000));
SELECT notifier.add_nats('c', 'nats://h', token => 't', username => 'u', password => 'p');
SELECT notifier.add_nats('c', 'nats://h', username => 'u');
SELECT notifier.add_nats('c', 'nats://h', password => 'p');
SELECT notifier.add_nats('c', 'nats://h', creds_file => '/dev/null', token => 't');
SELECT notifier.add_nats('c', 'nats://h', creds_file => '/dev/null', username => 'u', password => 'p');
-- files
SELECT notifier.add_nats('c', 'nats://h', creds_file => 'relative/path.creds');
SELECT notifier.add_nats('c', 'nats://h', creds_file => '/nonexistent/user.creds');
SELECT notifier.add_nats('c', 'tls://h', tls_ca_file => '/nonexistent/ca.pem');
SELECT notifier.add_nats('c', 'nats://h', tls_ca_file => '/dev/null');
SELECT notifier.add_nats('c', 'tls://h', tls_cert_file => '/dev/null');
SELECT notifier.add_nats('c', 'tls://h', tls_key_file => '/dev/null');
-- headers
SELECT notifier.add_nats('c', 'nats://h', headers => '[]');
SELECT notifier.add_nats('c', 'nats://h', headers => '"x"');
SELECT notifier.add_nats('c', 'nats://h', headers => '{"X-A": 1}');
SELECT notifier.add_nats('c', 'nats://h', headers => '{"a b": "c"}');
SELECT notifier.add_nats('c', 'nats://h', headers => '{"X-A": "a\r\nb"}');
SELECT notifier.add_nats('c', 'nats://h', headers => '{"Nats-Msg-Id": "1"}');
SELECT notifier.add_nats('c', 'nats://h', headers => '{"nats-expected-stream": "S"}');
SELECT notifier.add_nats('c', 'nats://h', headers => '{"PG-Notifier-Op": "x"}');
-- numbers
SELECT notifier.add_nats('c', 'nats://h', max_attempts => 0);
SELECT notifier.add_nats('c', 'nats://h', max_attempts => 101);
SELECT notifier.add_nats('c', 'nats://h', timeout_ms => 0);
SELECT notifier.add_nats('c', 'nats://h', concurrency => 0);
SELECT notifier.add_nats('c', 'nats://h', concurrency => 10001);
SELECT notifier.add_nats('c', 'nats://h', ordered => 'sometimes');
SELECT notifier.add_nats('c', 'nats://h', max_per_second => 0);
SELECT notifier.add_nats('c', 'nats://h', max_per_second => 'NaN');
SELECT notifier.add_nats('c', 'nats://h', max_per_second => 1000001);
-- max_per_second caps publishes: a route with one sends an event per message
SELECT notifier.add_nats('c_rate', 'nats://h', max_per_second => 50) AS rate_route \gset
SELECT batch_size, max_per_second FROM notifier.route_list WHERE id = :rate_route;

-- privileges: not PUBLIC's; a role granted EXECUTE adds routes, but names no
-- server file without pg_read_server_files
CREATE ROLE nats_plain;
CREATE ROLE nats_manager;
GRANT USAGE ON SCHEMA notifier TO nats_plain, nats_manager;
GRANT EXECUTE ON FUNCTION notifier.add_nats(text, text, text, text, text, text, text, text, jsonb, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, text, text, double precision) TO nats_manager;
SET ROLE nats_plain;
SELECT notifier.add_nats('c', 'nats://h');
RESET ROLE;
SET ROLE nats_manager;
SELECT notifier.add_nats('c', 'nats://h', token => 't') > 0 AS added;
SELECT notifier.add_nats('c', 'tls://h', tls_ca_file => '/dev/null');
SELECT notifier.add_nats('c', 'nats://h', creds_file => '/dev/null');
RESET ROLE;
GRANT pg_read_server_files TO nats_manager;
SET ROLE nats_manager;
SELECT notifier.add_nats('c', 'tls://h', tls_ca_file => '/dev/null') > 0 AS added;
RESET ROLE;

-- redeliver_dead() of a NATS route: its dead events are pending again
SELECT notifier.add_nats('c_dead', 'nats://127.0.0.1:4222') AS nats_dead \gset
INSERT INTO notifier.deliveries (route_id, event_id, payload, status, attempts)
VALUES (:nats_dead, '9.1', '{"id":"9.1"}', 'dead', 10),
	   (:nats_dead, '9.2', '{"id":"9.2"}', 'delivered', 1);
SELECT notifier.redeliver_dead(:nats_dead);
SELECT event_id, status, attempts FROM notifier.deliveries
 WHERE route_id = :nats_dead ORDER BY event_id;

SELECT notifier.remove_route(id) FROM notifier.routes WHERE kind = 'nats';
REVOKE ALL ON FUNCTION notifier.add_nats(text, text, text, text, text, text, text, text, jsonb, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, text, text, double precision) FROM nats_manager;
REVOKE USAGE ON SCHEMA notifier FROM nats_plain, nats_manager;
DROP ROLE nats_plain;
DROP ROLE nats_manager;
