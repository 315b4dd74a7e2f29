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
