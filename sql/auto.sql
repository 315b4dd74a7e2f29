--
-- delivery => 'auto', the default: every event is sent with NOTIFY; when its
-- channel has a route it is written to the outbox too (no worker runs in this
-- database, so the outbox keeps what was written).
--
CREATE TABLE au (id int PRIMARY KEY, v text);
SELECT notifier.watch('au');
SELECT channel, delivery, notify FROM notifier.watches WHERE "table" = 'au'::regclass;
SELECT listen('au');

-- no route: NOTIFY only
INSERT INTO au VALUES (1, 'unrouted');
SELECT * FROM ev;
SELECT count(*) AS outbox FROM notifier.outbox WHERE channel = 'au';

-- a route: NOTIFY and the outbox, the same event
-- (no worker serves this database: add_queue() warns)
SELECT notifier.add_queue('au') > 0 AS routed;
INSERT INTO au VALUES (2, 'routed');
UPDATE au SET v = 'routed, changed' WHERE id = 2;
SELECT * FROM ev;
SELECT channel, masked(event::text) AS event, notify FROM notifier.outbox WHERE channel = 'au' ORDER BY id;
SELECT count(*) AS same_ids
  FROM notifier.outbox o WHERE o.channel = 'au'
   AND o.event->>'op' = 'INSERT' AND o.event->'key'->>'id' = '2';

-- a route removed: NOTIFY only again (from the next transaction on)
SELECT notifier.remove_route(id) FROM notifier.routes WHERE channel = 'au';
DELETE FROM notifier.outbox WHERE channel = 'au';
INSERT INTO au VALUES (3, 'unrouted again');
SELECT * FROM ev;
SELECT count(*) AS outbox FROM notifier.outbox WHERE channel = 'au';

-- an oversize event: a reference over NOTIFY, the whole event in the outbox
SET client_min_messages = error;
SELECT notifier.add_queue('au') > 0 AS routed;
RESET client_min_messages;
INSERT INTO au VALUES (4, repeat('x', 9000));
SELECT channel, event FROM ev;
SELECT length(event::text) > 9000 AS whole, event ? 'ref' AS is_ref
  FROM (SELECT event::jsonb AS event FROM notifier.outbox WHERE channel = 'au') o;

-- the trigger's argument, and 0.1's coalesce= still accepted
SELECT notifier.watch('au', channel => 'au2', dedup => false);
SELECT channel, dedup, delivery FROM notifier.watches WHERE "table" = 'au'::regclass ORDER BY channel;
CREATE TRIGGER au_old AFTER INSERT ON au FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=au3', 'coalesce=false', 'delivery=notify');
SELECT channel, dedup, delivery FROM notifier.watches WHERE channel = 'au3';
CREATE TRIGGER au_both AFTER INSERT ON au FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=au4', 'coalesce=false', 'dedup=true');
SELECT channel, valid, error FROM notifier.watches WHERE channel = 'au4';

DROP TABLE au;
SELECT notifier.remove_route(id) FROM notifier.routes WHERE channel = 'au';
DELETE FROM notifier.outbox WHERE channel = 'au';
