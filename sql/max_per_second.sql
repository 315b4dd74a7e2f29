--
-- max_per_second: add_webhook()'s rate limit of a route, checked, shown in
-- route_list.  (That the worker keeps to it, and that a route to a receiver
-- that never answers holds back no other: test/integration/test_webhook.py,
-- steps rate and blackhole.)
--
\set VERBOSITY default

SELECT notifier.add_webhook('mps', 'http://127.0.0.1:9/a', max_per_second => 50) AS limited \gset
SELECT notifier.add_webhook('mps', 'http://127.0.0.1:9/b', max_per_second => 0.5) > 0 AS slow;
SELECT notifier.add_webhook('mps', 'http://127.0.0.1:9/c') > 0 AS unlimited;
SELECT target, max_per_second FROM notifier.route_list WHERE channel = 'mps' ORDER BY id;

-- above 0, at most 1,000,000, a number; NULL is no limit
SELECT notifier.add_webhook('mps', 'http://h/', max_per_second => 0);
SELECT notifier.add_webhook('mps', 'http://h/', max_per_second => -1);
SELECT notifier.add_webhook('mps', 'http://h/', max_per_second => 'NaN');
SELECT notifier.add_webhook('mps', 'http://h/', max_per_second => 'Infinity');
SELECT notifier.add_webhook('mps', 'http://h/', max_per_second => 1000001);
SELECT count(*) AS routes FROM notifier.routes WHERE channel = 'mps';

-- the table refuses them too
\set VERBOSITY terse
UPDATE notifier.routes SET max_per_second = 0 WHERE id = :limited;
UPDATE notifier.routes SET max_per_second = 'NaN' WHERE id = :limited;

SELECT count(notifier.remove_route(id)) AS removed FROM notifier.routes WHERE channel = 'mps';
