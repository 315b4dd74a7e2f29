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

-- ---------------------------------------------------------------------------
-- Worker: no lost batch (issue 13, items 5 to 8)
-- ---------------------------------------------------------------------------

-- A stored oversize event belongs to the channel it was sent on: the worker
-- resolves a reference ({"ref":N,"truncated":true}, a NOTIFY payload any role
-- can send) only to an event stored for the same channel.  Rows stored by 0.1
-- have no channel and are resolved for none.
ALTER TABLE notifier.payloads ADD COLUMN channel text;

-- Dead letters: events a route's sink could not take (not valid jsonb, refused
-- by a trigger or a constraint of the queue table, too large...), one row per
-- event and route, with the reason.  The other events of their batch are
-- written all the same.  Holds event data: readable only by the extension's
-- owner (superuser) and whom it grants, like the queue and delivery tables.
CREATE TABLE notifier.dead_letters (
	id			bigserial PRIMARY KEY,
	route_id	bigint NOT NULL,
	event_id	text,
	event		text NOT NULL,
	reason		text NOT NULL,
	failed_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX dead_letters_route_idx ON notifier.dead_letters (route_id, id);
REVOKE ALL ON notifier.dead_letters FROM PUBLIC;
REVOKE ALL ON SEQUENCE notifier.dead_letters_id_seq FROM PUBLIC;

COMMENT ON TABLE notifier.dead_letters IS
'events a route could not take, with the reason; the rest of their batch was written';
COMMENT ON COLUMN notifier.dead_letters.event IS
'the event as the worker received it (text: it may not be valid json or jsonb)';
