/* src/pg_notifier--0.1--0.2.sql -- from pg_notifier 0.1 to 0.2
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 * There is no install script for 0.2: CREATE EXTENSION pg_notifier runs the
 * 0.1 script and then this one, so a fresh install and an upgrade are the
 * same statements (test: sql/upgrade.sql).  Once 0.2 is released this file
 * is never edited again; 0.3 goes into pg_notifier--0.2--0.3.sql.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_notifier UPDATE TO '0.2'" to load this file. \quit

-- The worker's own control channel is never a route's channel: removing such a
-- route would make the worker stop listening to it.
ALTER TABLE notifier.routes
	ADD CONSTRAINT routes_channel_reserved_check CHECK (channel <> 'pg_notifier_control');

--
-- pg_dump: what users' data the extension keeps is dumped with it (in a
-- superuser's dump: routes with their secrets), and restored by CREATE
-- EXTENSION plus the data: routes, events waiting in the outbox, deliveries
-- not yet delivered, queued events and stored oversize events.  Delivered
-- rows are history, not state: they stay out.
--
SELECT pg_catalog.pg_extension_config_dump('notifier.routes', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.routes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.deliveries', 'WHERE status <> ''delivered''');
SELECT pg_catalog.pg_extension_config_dump('notifier.deliveries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.queue', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.payloads', '');
SELECT pg_catalog.pg_extension_config_dump('notifier.payloads_id_seq', '');

--
-- The worker processes hear of CREATE and DROP EXTENSION at once
-- (api/lifecycle.c): with pg_notifier.databases = '*' (the default) a
-- database gets its worker when the extension is created, and loses it when
-- the extension is dropped.
--
CREATE FUNCTION notifier.worker_start()
RETURNS void
AS 'MODULE_PATHNAME', 'notifier_worker_start'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION notifier.worker_start() FROM PUBLIC;

COMMENT ON FUNCTION notifier.worker_start() IS
'at commit, ask the launcher to start the worker of this database (the install script calls it)';

CREATE FUNCTION notifier.extension_dropped()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'notifier_extension_dropped'
LANGUAGE C;

CREATE EVENT TRIGGER pg_notifier_extension_dropped ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
	EXECUTE FUNCTION notifier.extension_dropped();

-- Keep this last: the worker starts once everything above is committed.
SELECT notifier.worker_start();
