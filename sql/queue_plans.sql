--
-- queue_plans: read(), ack(), nack() and pop() keep plans that use their
-- indexes, whatever notifier.queue's statistics said when they were made.
-- Each backend plans them at its first call and keeps the plans until the
-- table's next ANALYZE; here that first call is on a table analyzed empty,
-- and the calls that follow run after 20,000 events of two channels were
-- added: none may scan the table, and each must read only its own index
-- entries (the (channel, id) index for a channel's oldest events, the
-- primary key for ids).  The counters are the server's own statistics.
--
SELECT notifier.add_queue('qp') AS qp_route \gset
DELETE FROM notifier.queue;
VACUUM ANALYZE notifier.queue;

-- the plans are made now, for an empty table
SELECT count(*) FROM notifier.read('qp', '1 min', 10);
SELECT notifier.ack('{-1}'), notifier.nack('{-1}', '0');
SELECT count(*) FROM notifier.pop('qp', 10);

INSERT INTO notifier.queue (channel, payload)
SELECT CASE WHEN g % 2 = 0 THEN 'qp' ELSE 'qp_other' END, jsonb_build_object('n', g)
  FROM generate_series(1, 20000) g;

CREATE TEMP VIEW queue_scans AS
SELECT t.seq_scan,
	   (SELECT i.idx_tup_read FROM pg_stat_user_indexes i
		 WHERE i.indexrelid = 'notifier.queue_channel_id_idx'::regclass) AS channel_idx_read,
	   (SELECT i.idx_tup_read FROM pg_stat_user_indexes i
		 WHERE i.indexrelid = 'notifier.queue_pkey'::regclass) AS pkey_read
  FROM pg_stat_user_tables t
 WHERE t.relid = 'notifier.queue'::regclass;

SELECT pg_stat_force_next_flush();
SELECT * FROM queue_scans \gset before_

-- read 100 of channel qp, nack 10 of them, ack the rest
CREATE TEMP TABLE got AS SELECT id FROM notifier.read('qp', '1 min', 100);
SELECT count(*) FROM got;
SELECT notifier.nack(ARRAY(SELECT id FROM got ORDER BY id LIMIT 10), '1 h');
SELECT notifier.ack(ARRAY(SELECT id FROM got ORDER BY id OFFSET 10));
-- and pop 100
SELECT count(*) FROM notifier.pop('qp', 100);

SELECT pg_stat_force_next_flush();
-- no sequential scan; the (channel, id) index read for the 200 events
-- returned, and by pop() for the 10 hidden and 90 acked ones before them
-- (300 index entries in all, not 20,000, and none of channel qp_other); the
-- primary key for the ids the five statements looked up, one entry each
-- (read() 100, nack() 10, ack() 90, pop() 100)
SELECT s.seq_scan - :before_seq_scan AS seq_scans,
	   s.channel_idx_read - :before_channel_idx_read BETWEEN 200 AND 300 AS channel_index_entries_read_200_to_300,
	   s.pkey_read - :before_pkey_read AS primary_key_entries_read
  FROM queue_scans s;

-- clean up
SELECT notifier.remove_route(:qp_route);
DELETE FROM notifier.queue WHERE channel IN ('qp', 'qp_other');
