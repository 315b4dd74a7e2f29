--
-- webhooks: add_webhook() and its errors, route_list (secrets masked),
-- redeliver(), redeliver_dead().  (Delivery itself needs the worker and an
-- HTTP receiver: test/integration/test_webhook*.py.)
--
\set VERBOSITY default

SELECT notifier.add_webhook('orders', 'https://hooks.example.com/orders',
	headers => '{"Authorization": "Bearer abc", "X-Tenant": "7"}',
	secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
	batch_size => 10, max_attempts => 5, timeout_ms => 2000,
	concurrency => 4, ordered => true) AS hook \gset
SELECT notifier.add_webhook('orders', 'http://127.0.0.1:8080/x?y=1') > 0 AS added;
SELECT notifier.add_webhook('orders', 'http://user:pw@[::1]:8080/') > 0 AS added;
SELECT channel, kind, target, headers, secret, batch_size, max_attempts,
	   timeout_ms, concurrency, ordered
  FROM notifier.route_list ORDER BY id;

-- NULLs
SELECT notifier.add_webhook(NULL, 'http://h/');
SELECT notifier.add_webhook('c', NULL);
SELECT notifier.add_webhook('c', 'http://h/', headers => NULL);
SELECT notifier.add_webhook('c', 'http://h/', batch_size => NULL);
SELECT notifier.add_webhook('c', 'http://h/', max_attempts => NULL);
SELECT notifier.add_webhook('c', 'http://h/', timeout_ms => NULL);
SELECT notifier.add_webhook('c', 'http://h/', concurrency => NULL);
SELECT notifier.add_webhook('c', 'http://h/', ordered => NULL);
-- channel
SELECT notifier.add_webhook('', 'http://h/');
SELECT notifier.add_webhook(repeat('c', 64), 'http://h/');
-- url
SELECT notifier.add_webhook('c', '');
SELECT notifier.add_webhook('c', 'h/path');
SELECT notifier.add_webhook('c', 'ftp://h/file');
SELECT notifier.add_webhook('c', 'file:///etc/passwd');
SELECT notifier.add_webhook('c', 'gopher://h/');
SELECT notifier.add_webhook('c', 'http://');
SELECT notifier.add_webhook('c', 'http:///path');
SELECT notifier.add_webhook('c', 'http://h/a b');
SELECT notifier.add_webhook('c', E'http://h/\r\nX-Injected: 1');
SELECT notifier.add_webhook('c', 'http://h:99999/');
SELECT notifier.add_webhook('c', 'http://[::1/');
-- headers
SELECT notifier.add_webhook('c', 'http://h/', headers => '[]');
SELECT notifier.add_webhook('c', 'http://h/', headers => '"x"');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"X-A": 1}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"X-A": null}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"X-A": {"b": "c"}}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"": "v"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"X A": "v"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"X:A": "v"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"X-Ä": "v"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => E'{"X-A\\r\\nB": "v"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => E'{"X-A": "v\\r\\nX-Injected: 1"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"Content-Type": "text/plain"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"user-agent": "me"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"Webhook-Signature": "v1,x"}');
SELECT notifier.add_webhook('c', 'http://h/', headers => '{"Host": "other"}');
-- secret
SELECT notifier.add_webhook('c', 'http://h/', secret => '');
SELECT notifier.add_webhook('c', 'http://h/', secret => 'whsec_');
SELECT notifier.add_webhook('c', 'http://h/', secret => 'whsec_!!!not base64');
-- numbers
SELECT notifier.add_webhook('c', 'http://h/', batch_size => 0);
SELECT notifier.add_webhook('c', 'http://h/', batch_size => 1001);
SELECT notifier.add_webhook('c', 'http://h/', max_attempts => 0);
SELECT notifier.add_webhook('c', 'http://h/', max_attempts => 101);
SELECT notifier.add_webhook('c', 'http://h/', timeout_ms => -1);
SELECT notifier.add_webhook('c', 'http://h/', timeout_ms => 600001);
SELECT notifier.add_webhook('c', 'http://h/', concurrency => 0);
SELECT notifier.add_webhook('c', 'http://h/', concurrency => 101);
-- allowed hosts
SET pg_notifier.allowed_hosts = 'hooks.example.com, 127.0.0.1';
SELECT notifier.add_webhook('c', 'https://evil.example.net/');
SELECT notifier.add_webhook('c', 'https://HOOKS.example.com/ok') > 0 AS added;
RESET pg_notifier.allowed_hosts;

-- nothing was added by the failed calls
SELECT count(*) FROM notifier.routes;

-- redeliver
INSERT INTO notifier.deliveries (route_id, event_id, payload, status, attempts)
VALUES (:hook, '1.1', '{"id":"1.1"}', 'dead', 5),
	   (:hook, '1.2', '{"id":"1.2"}', 'dead', 5),
	   (:hook, '1.3', '{"id":"1.3"}', 'delivered', 1);
SELECT notifier.redeliver(NULL);
SELECT notifier.redeliver(-1);
SELECT notifier.redeliver(id) FROM notifier.deliveries WHERE event_id = '1.3';
SELECT notifier.redeliver(id) FROM notifier.deliveries WHERE event_id = '1.1';
SELECT event_id, status, attempts FROM notifier.deliveries ORDER BY id;
SELECT notifier.redeliver_dead(NULL);
SELECT notifier.redeliver_dead(-1);
SELECT notifier.redeliver_dead(:hook);
SELECT event_id, status, attempts FROM notifier.deliveries ORDER BY id;
-- a batch is one message: redeliver() of one of its rows sends it whole
DELETE FROM notifier.deliveries;
INSERT INTO notifier.deliveries (route_id, event_id, payload, status, attempts)
SELECT :hook, e, pg_catalog.json_build_object('id', e), 'dead', 5
  FROM unnest(ARRAY['2.1', '2.2', '2.3', '2.4']) e;
UPDATE notifier.deliveries d SET batch_id = b.first
  FROM (SELECT min(id) AS first FROM notifier.deliveries WHERE event_id <> '2.4') b
 WHERE d.event_id <> '2.4';
UPDATE notifier.deliveries SET batch_id = id WHERE event_id = '2.4';
SELECT notifier.redeliver(id) FROM notifier.deliveries WHERE event_id = '2.2';
SELECT event_id, status, attempts, batch_id = min(id) OVER () AS batch_of_first
  FROM notifier.deliveries ORDER BY id;

-- a role without grants: no routes, no secrets, no deliveries
CREATE ROLE notifier_user;
SET ROLE notifier_user;
SELECT notifier.add_webhook('c', 'http://h/');
SELECT notifier.redeliver_dead(:hook);
SELECT secret FROM notifier.routes;
SELECT secret FROM notifier.route_list;
SELECT count(*) FROM notifier.deliveries;
RESET ROLE;
DROP ROLE notifier_user;

-- removing a webhook route removes its deliveries
SELECT notifier.remove_route(:hook);
SELECT count(*) FROM notifier.deliveries;
DELETE FROM notifier.routes;

-- ordered: 'none' (the default), 'key', 'route'; 0.1's true and false are
-- 'route' and 'none' (no worker warning here)
SET client_min_messages = error;
SELECT notifier.add_webhook('ord', 'http://h/a') > 0 AS added,
	   notifier.add_webhook('ord', 'http://h/b', ordered => 'key') > 0 AS added_key,
	   notifier.add_webhook('ord', 'http://h/c', ordered => 'route') > 0 AS added_route,
	   notifier.add_webhook('ord', 'http://h/d', ordered => true) > 0 AS added_true,
	   notifier.add_webhook('ord', 'http://h/e', ordered => false) > 0 AS added_false;
RESET client_min_messages;
SELECT target, ordered FROM notifier.route_list ORDER BY id;
SELECT notifier.add_webhook('ord', 'http://h/', ordered => 'keys');
DELETE FROM notifier.routes;
