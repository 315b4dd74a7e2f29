--
-- no lost batch: the objects behind it (the worker's behaviour is tested in
-- test/integration/test_worker_nolost.py)
--

-- batches are bounded by bytes: two GUCs, reload to apply
SHOW pg_notifier.max_batch_bytes;
SHOW pg_notifier.max_webhook_body_bytes;
SELECT name, context, unit, min_val, max_val FROM pg_settings
 WHERE name IN ('pg_notifier.max_batch_bytes', 'pg_notifier.max_webhook_body_bytes')
 ORDER BY name;

-- an oversize event is stored with its channel: the worker resolves a
-- reference only to an event of the channel it arrived on
CREATE TABLE nl_docs (id int PRIMARY KEY, body text);
SELECT notifier.watch('nl_docs', channel => 'nl_ref');
INSERT INTO nl_docs VALUES (1, repeat('x', 9000));
SELECT channel, length(event::text) > 9000 AS whole
  FROM notifier.payloads ORDER BY id DESC LIMIT 1;
SELECT notifier.unwatch('nl_docs', 'nl_ref');

-- dead letters hold event data: no privilege for PUBLIC, nor for pg_monitor
\d notifier.dead_letters
SELECT has_table_privilege('public', 'notifier.dead_letters', 'SELECT') AS public_select,
	   has_table_privilege('pg_monitor', 'notifier.dead_letters', 'SELECT') AS monitor_select,
	   has_sequence_privilege('public', 'notifier.dead_letters_id_seq', 'USAGE') AS public_seq;
CREATE ROLE regress_nl_reader;
SET ROLE regress_nl_reader;
SELECT try($$SELECT count(*) FROM notifier.dead_letters$$);
RESET ROLE;
DROP ROLE regress_nl_reader;
DROP TABLE nl_docs;
