--
-- events of the NOTIFY limit (8000 bytes) or pg_notifier.max_payload_bytes
--
SELECT listen('ref', 'keys', 'error', 'skip');
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
-- (error with dedup => false: a coalesced event is built at COMMIT,
-- and so is its error; see the coalesce test)
SELECT notifier.watch('docs', channel => p, on_oversize => p, dedup => p <> 'error')
  FROM unnest(ARRAY['keys', 'error', 'skip']) p;
SELECT notifier.watch('docs', channel => 'ref');		-- reference is the default
SELECT channel, on_oversize FROM notifier.watches ORDER BY channel;

-- small events pass untouched under every policy
INSERT INTO docs VALUES (1, 'small', 'x');
SELECT * FROM ev ORDER BY channel;

-- error: the statement fails with a clear message; nothing is sent
SELECT try($$INSERT INTO docs VALUES (2, 'big', repeat('x', 9000))$$);
SELECT * FROM ev;
SELECT notifier.unwatch('docs', 'error');

-- the others: a reference, the key-only envelope, or a warning (its text
-- has the xid-dependent size, so it is silenced here; the counters below
-- show it)
SET client_min_messages = error;
INSERT INTO docs VALUES (2, 'big', repeat('x', 9000));
SELECT * FROM ev ORDER BY channel;

-- the reference resolves to the full event
CREATE TEMP TABLE big AS SELECT payload::json AS e FROM events();
UPDATE docs SET body = repeat('y', 20000) WHERE id = 2;
RESET client_min_messages;
INSERT INTO big SELECT payload::json FROM events() WHERE channel = 'ref';
SELECT e->>'op' AS op, e->>'truncated' AS truncated,
	   length(notifier.payload((e->>'ref')::bigint)::text) > 20000 AS full_length,
	   notifier.payload((e->>'ref')::bigint)->>'id' = e->>'id' AS same_id,
	   notifier.payload((e->>'ref')::bigint)->'row'->>'body' = (SELECT body FROM docs WHERE id = 2) AS full_row
  FROM big;
SELECT count(*) AS stored FROM notifier.payloads;

-- an event one byte under the limit goes as it is; at the limit it does not
SELECT notifier.unwatch('docs', 'keys');
SELECT notifier.unwatch('docs', 'skip');
DELETE FROM docs;
SELECT * FROM ev;
-- the size of the event of (3, 't', 'z') without its one-byte body
INSERT INTO docs VALUES (3, 't', '');
UPDATE docs SET body = 'z' WHERE id = 3;
CREATE TEMP TABLE sizes AS SELECT octet_length(payload) - 1 AS base FROM events() WHERE payload LIKE '%"UPDATE"%';
SELECT base > 100 AND base < 300 AS sane FROM sizes;
-- body of (7999 - base) bytes: 7999 bytes in all
UPDATE docs SET body = repeat('a', 7999 - (SELECT base FROM sizes)) WHERE id = 3;
UPDATE docs SET body = repeat('b', 8000 - (SELECT base FROM sizes)) WHERE id = 3;
SELECT CASE WHEN payload LIKE '%"truncated":true}' THEN 'truncated' ELSE octet_length(payload) || ' bytes' END AS sent
  FROM events();

-- pg_notifier.max_payload_bytes lowers the limit
SET pg_notifier.max_payload_bytes = 1024;
UPDATE docs SET body = repeat('c', 1500) WHERE id = 3;
SELECT masked(payload) FROM events();
SET pg_notifier.max_payload_bytes = 100;
SET pg_notifier.max_payload_bytes = 9000;
RESET pg_notifier.max_payload_bytes;
SHOW pg_notifier.max_payload_bytes;

-- a key too long for the envelope: the reference goes without it
CREATE TABLE longkey (k text PRIMARY KEY, v text);
SELECT notifier.watch('longkey', channel => 'keys', on_oversize => 'keys');
INSERT INTO longkey VALUES (repeat('k', 7990), 'v');
CREATE TEMP TABLE lk AS SELECT payload FROM events();
SELECT masked(payload) FROM lk;
SELECT length(notifier.payload((payload::json->>'ref')::bigint)->'key'->>'k') AS full_key
  FROM lk;

-- notifier.payload() errors
SELECT notifier.payload(NULL);
SELECT notifier.payload(-1);

-- the counters (shared_preload_libraries is set in the test cluster)
CREATE TEMP TABLE before AS SELECT * FROM notifier.capture_stats();
SELECT notifier.watch('docs', channel => 'skip', on_oversize => 'skip');
UPDATE docs SET title = title;						-- no-op: 2 watches
UPDATE docs SET title = 'again';					-- 2 events
SET client_min_messages = error;
UPDATE docs SET body = repeat('e', 9000);			-- 1 reference, 1 skipped
RESET client_min_messages;
SELECT a.events_sent - b.events_sent AS sent,
	   a.oversize_referenced - b.oversize_referenced AS referenced,
	   a.oversize_keys - b.oversize_keys AS keys,
	   a.oversize_skipped - b.oversize_skipped AS skipped,
	   a.noop_updates - b.noop_updates AS noop
  FROM notifier.capture_stats() a, before b;
SELECT count(*) FROM events();
DROP TABLE docs, longkey;
