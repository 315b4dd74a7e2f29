--
-- queue_read: notifier.read() with a visibility timeout, ack(), nack(),
-- read_ct and add_queue()'s max_reads; pop() skips what read() hides.
-- (The worker is not running for this database: the events are inserted
-- into notifier.queue as the queue sink would.)
--
\set VERBOSITY default

SELECT notifier.add_queue('rq') AS rq_route \gset
SELECT notifier.add_queue('rq_poison', max_reads => 2) AS poison_route \gset
SELECT channel, queue_table, max_reads FROM notifier.routes
 WHERE id IN (:rq_route, :poison_route) ORDER BY id;

INSERT INTO notifier.queue (channel, payload)
SELECT 'rq', jsonb_build_object('id', g || '.1', 'n', g) FROM generate_series(1, 5) g;

-- bad arguments
SELECT * FROM notifier.read(NULL, '30 s', 10);
SELECT * FROM notifier.read('rq', NULL, 10);
SELECT * FROM notifier.read('rq', '30 s', NULL);
SELECT * FROM notifier.read('rq', '-1 s', 10);
SELECT * FROM notifier.read('rq', '0', 10);
SELECT * FROM notifier.read('rq', '30 s', 0);
SELECT * FROM notifier.read('', '30 s', 10);
SELECT * FROM notifier.read(repeat('c', 64), '30 s', 10);
SELECT notifier.ack(NULL);
SELECT notifier.nack(NULL);
SELECT notifier.nack('{1}', NULL);
SELECT notifier.nack('{1}', '-1 s');
SELECT notifier.add_queue('rq_bad', max_reads => 0);
SELECT notifier.add_queue('rq_bad', max_reads => -3);
CREATE TABLE my_rq (channel text, payload jsonb);
SELECT notifier.add_queue('rq_bad', 'my_rq', max_reads => 3);
SELECT notifier.add_queue('rq_bad', 'my_rq') > 0 AS custom_without_max_reads;
-- a channel without a queue route into notifier.queue: an error (typos)
SELECT * FROM notifier.read('no_such_channel', '30 s', 10);
SELECT * FROM notifier.read('rq_bad', '30 s', 10);
-- nothing was changed by the failed calls
SELECT count(*) FILTER (WHERE vt IS NOT NULL) AS hidden, sum(read_ct) AS reads
  FROM notifier.queue WHERE channel = 'rq';

-- read: the oldest first, hidden for vt, read_ct counted
SELECT payload->>'n' AS n, read_ct, vt > clock_timestamp() + interval '50 minutes' AS hidden_for_vt
  FROM notifier.read('rq', '1 hour', 2);
-- the next reader gets the next ones, never the hidden ones
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq', '1 hour', 2);
-- pop() does not take hidden events either
SELECT payload->>'n' AS n FROM notifier.pop('rq', 10);
SELECT * FROM notifier.read('rq', '1 hour', 10);

-- ack removes, only what it names; nack makes visible again, read_ct kept
SELECT notifier.ack(ARRAY(SELECT id FROM notifier.queue WHERE payload->>'n' = '1'));
SELECT notifier.ack(ARRAY(SELECT id FROM notifier.queue WHERE payload->>'n' = '1'));
SELECT notifier.nack(ARRAY(SELECT id FROM notifier.queue WHERE payload->>'n' IN ('2', '3')));
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq', '1 hour', 10);
-- a delay: visible again only after it
SELECT notifier.nack(ARRAY(SELECT id FROM notifier.queue WHERE payload->>'n' = '2'), '1 hour');
SELECT count(*) FROM notifier.read('rq', '1 hour', 10);
SELECT notifier.ack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq'));
SELECT count(*) FROM notifier.queue WHERE channel = 'rq';

-- an event read and never acked comes back after vt, with read_ct + 1
INSERT INTO notifier.queue (channel, payload) VALUES ('rq', '{"id":"6.1","n":6}');
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq', '0.2 s', 10);
CREATE FUNCTION read_again(ch text, deadline interval) RETURNS SETOF notifier.queue
LANGUAGE plpgsql AS $$
DECLARE
	stop timestamptz := clock_timestamp() + deadline;
BEGIN
	LOOP
		RETURN QUERY SELECT r.id, r.channel, r.payload, r.received_at, r.vt, r.read_ct
					   FROM notifier.read(ch, '1 hour', 10) r;
		IF FOUND OR clock_timestamp() > stop THEN
			RETURN;
		END IF;
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
SELECT payload->>'n' AS n, read_ct FROM read_again('rq', '60 s');
SELECT notifier.ack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq'));

-- max_reads 2: read twice, the third time it is a dead letter with its
-- reason, never returned; the other events of the read are returned
INSERT INTO notifier.queue (channel, payload) VALUES ('rq_poison', '{"id":"7.1","n":7}');
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq_poison', '1 hour', 10);
SELECT notifier.nack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq_poison'));
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq_poison', '1 hour', 10);
SELECT notifier.nack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq_poison'));
INSERT INTO notifier.queue (channel, payload) VALUES ('rq_poison', '{"id":"8.1","n":8}');
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq_poison', '1 hour', 10);
SELECT route_id = :poison_route AS its_route, event_id, event::jsonb, reason
  FROM notifier.dead_letters WHERE route_id = :poison_route;
SELECT payload->>'n' AS n, read_ct FROM notifier.queue WHERE channel = 'rq_poison';

-- privileges: like pop()'s, the caller's own on notifier.queue
CREATE ROLE rq_consumer;
INSERT INTO notifier.queue (channel, payload) VALUES ('rq', '{"id":"9.1","n":9}');
SET ROLE rq_consumer;
SELECT * FROM notifier.read('rq', '1 hour', 10);
SELECT notifier.ack('{1}');
SELECT notifier.nack('{1}');
RESET ROLE;
GRANT SELECT ON notifier.queue TO rq_consumer;
SET ROLE rq_consumer;
SELECT * FROM notifier.read('rq', '1 hour', 10);
RESET ROLE;
GRANT UPDATE ON notifier.queue TO rq_consumer;
SET ROLE rq_consumer;
SELECT payload->>'n' AS n, read_ct FROM notifier.read('rq', '1 hour', 10);
SELECT notifier.nack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq'));
SELECT notifier.ack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq'));
-- what read() does as the table's owner stays there
SELECT * FROM notifier.dead_letters;
SELECT * FROM notifier.routes;
RESET ROLE;
GRANT DELETE ON notifier.queue TO rq_consumer;
SET ROLE rq_consumer;
SELECT notifier.ack(ARRAY(SELECT id FROM notifier.queue WHERE channel = 'rq'));
RESET ROLE;
REVOKE ALL ON notifier.queue FROM rq_consumer;
DROP ROLE rq_consumer;

-- clean up
SELECT notifier.remove_route(:rq_route);
SELECT notifier.remove_route(:poison_route);
SELECT notifier.remove_route(id) FROM notifier.routes WHERE channel = 'rq_bad';
DELETE FROM notifier.dead_letters WHERE route_id = :poison_route;
DELETE FROM notifier.queue WHERE channel IN ('rq', 'rq_poison');
DROP FUNCTION read_again(text, interval);
DROP TABLE my_rq;
