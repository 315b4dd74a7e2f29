--
-- notifier.replay(route, since): the delivered events of a webhook route
-- received since a time become new pending deliveries, in their order, under
-- their own event ids; nothing else does.  (No worker serves this database:
-- the rows stay as replay() leaves them.)
--
SET client_min_messages = error;
SELECT notifier.add_webhook('rp', 'http://127.0.0.1:9/rp') AS rp \gset
SELECT notifier.add_webhook('rp_other', 'http://127.0.0.1:9/other') AS other \gset
SELECT notifier.add_queue('rp_queue') AS q \gset
RESET client_min_messages;
INSERT INTO notifier.deliveries (route_id, event_id, payload, status, received_at)
VALUES (:rp, '1.1', '{"n":1}', 'delivered', '2026-01-01 10:00+00'),
	   (:rp, '2.1', '{"n":2}', 'delivered', '2026-01-01 11:00+00'),
	   (:rp, '3.1', '{"n":3}', 'dead',      '2026-01-01 11:30+00'),
	   (:rp, '4.1', '{"n":4}', 'delivered', '2026-01-01 12:00+00'),
	   (:rp, '5.1', '{"n":5}', 'pending',   '2026-01-01 12:30+00'),
	   (:other, '9.1', '{"n":9}', 'delivered', '2026-01-01 12:00+00');

SELECT notifier.replay(:rp, '2026-01-01 11:00+00') AS replayed;
SELECT event_id, payload::text, status, attempts, batch_id IS NULL AS new_batch
  FROM notifier.deliveries WHERE route_id = :rp AND status = 'pending' ORDER BY id;
SELECT count(*) AS other_route FROM notifier.deliveries WHERE route_id = :other;
SELECT notifier.replay(:rp, '2027-01-01') AS none_since;

-- bad inputs
SELECT notifier.replay(NULL, now());
SELECT notifier.replay(:rp, NULL);
SELECT notifier.replay(-1, now());
\set VERBOSITY sqlstate
SELECT notifier.replay(:q, now());	-- a queue route (its id varies)
\set VERBOSITY default
CREATE ROLE replay_nobody;
SET ROLE replay_nobody;
SELECT notifier.replay(:rp, now());
RESET ROLE;
DROP ROLE replay_nobody;

SELECT notifier.remove_route(id) FROM notifier.routes WHERE channel IN ('rp', 'rp_other', 'rp_queue');
