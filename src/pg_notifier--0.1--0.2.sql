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
-- delivery => 'auto' is the default: every event is sent with NOTIFY, and
-- when its channel has a route it is also written to the outbox, from where
-- the worker delivers it (capture/emit.c).  dedup replaces "coalesce", an SQL
-- keyword; the trigger still accepts coalesce=.
--
DROP FUNCTION notifier.watch(regclass, text, text, text[], text[], text[], text, boolean, text, text, text, boolean);

CREATE FUNCTION notifier.watch(
	relation	regclass,
	channel		text DEFAULT NULL,
	payload		text DEFAULT 'row',
	columns		text[] DEFAULT NULL,
	exclude		text[] DEFAULT NULL,
	events		text[] DEFAULT ARRAY['insert', 'update', 'delete', 'truncate'],
	condition	text DEFAULT NULL,
	dedup		boolean DEFAULT true,
	level		text DEFAULT 'row',
	on_oversize text DEFAULT 'reference',
	delivery	text DEFAULT 'auto',
	notify		boolean DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'notifier_watch'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.watch(regclass, text, text, text[], text[], text[], text, boolean, text, text, text, boolean) IS
'send the changes of a table as JSON events on a channel; returns the channel';

-- A change of routes reaches the worker (control channel) and every writing
-- backend (a relcache invalidation: which channels are routed) at commit.
CREATE OR REPLACE FUNCTION notifier.routes_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'notifier_routes_changed'
LANGUAGE C;

--
-- Capture and the watch API (issue 13): watch_options() says whether a
-- trigger's arguments are valid, and notifier.watches shows a trigger whose
-- arguments are not (one written by hand) as invalid, with the reason,
-- instead of failing for everyone.  watch_options() of a trigger that is not
-- a notify_change trigger is an error.
--
DROP VIEW notifier.watches;
DROP FUNCTION notifier.watch_options(oid);

CREATE FUNCTION notifier.watch_options(
	trigger_oid oid,
	OUT channel text,
	OUT payload text,
	OUT columns text[],
	OUT exclude text[],
	OUT events text[],
	OUT condition text,
	OUT dedup boolean,
	OUT level text,
	OUT on_oversize text,
	OUT delivery text,
	OUT notify boolean,
	OUT valid boolean,
	OUT error text)
RETURNS record
AS 'MODULE_PATHNAME', 'notifier_watch_options'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION notifier.watch_options(oid) IS
'the options of a notify_change trigger, defaults filled in; valid is false, with the reason in error, when its arguments are not valid';

CREATE VIEW notifier.watches AS
SELECT t.tgrelid::pg_catalog.regclass AS "table",
	   o.channel,
	   o.payload,
	   o.columns,
	   o.exclude,
	   o.events,
	   o.condition,
	   o.dedup,
	   o.level,
	   o.on_oversize,
	   o.delivery,
	   o.notify,
	   pg_catalog.array_agg(t.tgname::text ORDER BY t.tgname) AS triggers,
	   o.valid,
	   o.error
  FROM pg_catalog.pg_trigger t,
	   LATERAL notifier.watch_options(t.oid) o
 WHERE t.tgfoid = 'notifier.notify_change()'::pg_catalog.regprocedure
   AND t.tgparentid OPERATOR(pg_catalog.=) 0
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15;

GRANT SELECT ON notifier.watches TO PUBLIC;

-- Excluded columns are tracked by attribute number from 0.2 on: watch()
-- writes exclude_attnums.  Triggers made by 0.1's watch() still match by
-- name (a renamed column then stops writes; a column added under the old
-- name is excluded, the renamed one is not): say so, watch() again fixes it.
DO $$
DECLARE
	n int;
BEGIN
	SELECT pg_catalog.count(*) INTO n
	  FROM pg_catalog.pg_trigger t
	 WHERE t.tgfoid OPERATOR(pg_catalog.=) 'notifier.notify_change()'::pg_catalog.regprocedure
	   AND t.tgparentid OPERATOR(pg_catalog.=) 0
	   AND pg_catalog.strpos(pg_catalog.encode(t.tgargs, 'escape'), 'exclude=') OPERATOR(pg_catalog.>) 0
	   AND pg_catalog.strpos(pg_catalog.encode(t.tgargs, 'escape'), 'exclude_attnums=') OPERATOR(pg_catalog.=) 0;
	IF n OPERATOR(pg_catalog.>) 0 THEN
		RAISE WARNING '% pg_notifier triggers match excluded columns by name', n
			USING DETAIL = 'A column renamed after watch() would no longer be excluded, were a new column given its old name.',
				  HINT = 'Call notifier.watch() again for the watches of notifier.watches with an exclude list: it records the columns themselves.';
	END IF;
END
$$;

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

--
-- Worker security and lifecycle (issue 13): credentials are shown only to
-- roles that can manage routes.
--
-- "Can manage routes": superuser, or EXECUTE on notifier.add_webhook (which
-- PUBLIC does not have).  Every other reader of notifier.route_list and
-- notifier.stats (pg_monitor) sees header names with their values masked,
-- and URLs with their user information (user:pass@) and their whole query
-- string and fragment (?token=...) masked: which query parameters carry a
-- credential is the receiver's business, so none is shown.
CREATE FUNCTION notifier.can_manage_routes()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.has_function_privilege(
	'notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, boolean)'::pg_catalog.regprocedure,
	'EXECUTE')
$$;

CREATE FUNCTION notifier.masked_url(url text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.regexp_replace(
		 pg_catalog.regexp_replace(url, '^([^:/?#]+://)[^/?#]*@', '\1********@'),
		 '[?#].*$', '?********')
$$;

REVOKE ALL ON FUNCTION notifier.can_manage_routes() FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.masked_url(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notifier.can_manage_routes() TO pg_monitor;
GRANT EXECUTE ON FUNCTION notifier.masked_url(text) TO pg_monitor;

-- notifier.route_list masks them too: see "ordered => 'key'" below, where it is
-- made again for the new type of notifier.routes.ordered; notifier.stats
-- masks the URL as well: see pause_route() below, where it is made once, with
-- its last column.

-- ---------------------------------------------------------------------------
-- Delivery engine (issue 16): a batch is one message
-- ---------------------------------------------------------------------------

-- A request of a batch_size > 1 route is one message: its webhook-id, its
-- events and their order are fixed when it is first claimed, and every retry
-- sends exactly them.  batch_id is the id of the batch's first row, written
-- on each row of the batch by that first claim (NULL: not claimed yet, or a
-- route of batch_size 1, where a row is its own message); a retry claims the
-- batch by it (worker/sinks/remote_delivery.c).  The rows of a batch always
-- share their status, attempts and next attempt.
ALTER TABLE notifier.deliveries ADD COLUMN batch_id bigint;

COMMENT ON COLUMN notifier.deliveries.batch_id IS
'the id of the first row of the message (batch) this row was first sent in; NULL: not sent yet, or sent alone';

-- The batches waiting for a retry, and the dead ones (redeliver): a retry
-- claims whole batches.
CREATE INDEX deliveries_batch_idx ON notifier.deliveries (route_id, batch_id)
	WHERE batch_id IS NOT NULL AND status IN ('pending', 'dead');

-- redeliver() of one row of a batch sends its whole batch again: the same
-- message, from attempt 1.
CREATE OR REPLACE FUNCTION notifier.redeliver(delivery_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current_status text;
	batch bigint;
	route bigint;
BEGIN
	IF delivery_id IS NULL THEN
		RAISE EXCEPTION 'delivery_id must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the id of a row of notifier.deliveries.';
	END IF;
	SELECT d.status, d.batch_id, d.route_id INTO current_status, batch, route
	  FROM notifier.deliveries d
	 WHERE d.id = delivery_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'delivery % does not exist', delivery_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'Delivered rows are removed after pg_notifier.retention.';
	END IF;
	IF current_status <> 'dead' THEN
		RAISE EXCEPTION 'delivery % is %, not dead', delivery_id, current_status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Only dead deliveries can be sent again.';
	END IF;
	UPDATE notifier.deliveries d
	   SET status = 'pending', attempts = 0, next_attempt_at = now(),
		   updated_at = now()
	 WHERE d.id = delivery_id
		OR (d.route_id = route AND d.batch_id = batch AND d.status = 'dead');
	PERFORM pg_notify('pg_notifier_control', 'deliveries');
END
$$;

-- ---------------------------------------------------------------------------
-- Delivery engine (issue 16): ordered => 'none' | 'key' | 'route'
-- ---------------------------------------------------------------------------

-- How a webhook route orders its deliveries: 'none' (up to concurrency
-- requests in any order), 'key' (the events of one table and key in commit
-- order, the next waiting for the outcome of the one before, retries
-- included; different keys concurrently, up to concurrency), 'route' (one
-- request at a time, in commit order).  0.1's boolean still works:
-- true is 'route', false 'none' (an implicit cast).
CREATE TYPE notifier.ordering AS ENUM ('none', 'key', 'route');

CREATE FUNCTION notifier.ordering(boolean)
RETURNS notifier.ordering
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE WHEN $1 THEN 'route' ELSE 'none' END::notifier.ordering
$$;

CREATE CAST (boolean AS notifier.ordering)
	WITH FUNCTION notifier.ordering(boolean) AS IMPLICIT;

-- Copy the grants of a saved ACL onto an object (kind: 'FUNCTION', 'TABLE'),
-- for the objects this upgrade makes again; the owner's are its own.
CREATE FUNCTION notifier.copy_grants(acl aclitem[], kind text, target text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g record;
BEGIN
	FOR g IN SELECT a.privilege_type, a.grantee, a.is_grantable
			   FROM pg_catalog.aclexplode(acl) a
			  WHERE a.grantee OPERATOR(pg_catalog.<>) a.grantor
	LOOP
		EXECUTE pg_catalog.format('GRANT %s ON %s %s TO %s%s', g.privilege_type, kind, target,
								  CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
									   ELSE pg_catalog.quote_ident(g.grantee::pg_catalog.regrole::text) END,
								  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Route filter and transform (issue 18)
-- ---------------------------------------------------------------------------

-- filter: a jsonpath over the event, jsonb_path_match semantics, evaluated by
-- the worker before anything is written for the route (true: the route gets
-- the event; false or unknown: it does not, and counts it as filtered; an
-- error or a result that is not boolean: a dead letter with the reason).
-- transform: a function jsonb -> jsonb whose result is what the route gets
-- (after the filter, which sees the original event), called by the worker as
-- owner, the role that added the route or last set its transform, in a
-- security-restricted operation.  See worker/route_shape.c.  transform is the
-- function's signature as text, not a regprocedure, which pg_upgrade refuses
-- in a table (common/route_transform.c); the functions take a regprocedure.
ALTER TABLE notifier.routes
	ADD COLUMN filter jsonpath,
	ADD COLUMN transform text,
	ADD COLUMN owner regrole,
	ADD CONSTRAINT routes_transform_owner_check CHECK (transform IS NULL OR owner IS NOT NULL);

COMMENT ON COLUMN notifier.routes.filter IS
'only the events for which this jsonpath is true (jsonb_path_match) are written for the route';
COMMENT ON COLUMN notifier.routes.transform IS
'the schema-qualified signature of a function jsonb -> jsonb, run as owner: its result is what the route gets';
COMMENT ON COLUMN notifier.routes.owner IS
'the role that added the route, or last set its transform: the transform runs as it';

-- add_queue() with filter and transform, and max_reads (see "Queue sink"
-- below), with the grants of 0.1's
CREATE FUNCTION notifier.add_queue(
	channel		text,
	queue_table regclass DEFAULT 'notifier.queue',
	filter		jsonpath DEFAULT NULL,
	transform	regprocedure DEFAULT NULL,
	max_reads	integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_add_queue'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer) IS
'route the events of a channel into a queue table; returns the route id';

REVOKE ALL ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer) FROM PUBLIC;
SELECT notifier.copy_grants(p.proacl, 'FUNCTION',
		'notifier.add_queue(text, regclass, jsonpath, regprocedure, integer)')
  FROM pg_catalog.pg_proc p
 WHERE p.oid OPERATOR(pg_catalog.=) 'notifier.add_queue(text, regclass)'::pg_catalog.regprocedure;
DROP FUNCTION notifier.add_queue(text, regclass);

-- alter_route(): set a route's filter or transform, or remove them (reset),
-- without removing the route and its pending events.  Whoever may remove a
-- route may alter it: the grants of remove_route().
CREATE FUNCTION notifier.alter_route(
	route_id	bigint,
	filter		jsonpath DEFAULT NULL,
	transform	regprocedure DEFAULT NULL,
	reset		text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'notifier_alter_route'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.alter_route(bigint, jsonpath, regprocedure, text[]) IS
'change the filter or transform of a route; reset names the options to remove (''filter'', ''transform'')';

REVOKE ALL ON FUNCTION notifier.alter_route(bigint, jsonpath, regprocedure, text[]) FROM PUBLIC;
SELECT notifier.copy_grants(p.proacl, 'FUNCTION',
		'notifier.alter_route(bigint, jsonpath, regprocedure, text[])')
  FROM pg_catalog.pg_proc p
 WHERE p.oid OPERATOR(pg_catalog.=) 'notifier.remove_route(bigint)'::pg_catalog.regprocedure;

-- ---------------------------------------------------------------------------
-- Delivery engine (issue 16): max_per_second
-- ---------------------------------------------------------------------------

-- The most messages (requests) per second a remote route starts: a token
-- bucket in the worker's delivery engine.  NULL: no limit.  Here, before
-- notifier.route_list is made again below: it shows the column.
ALTER TABLE notifier.routes ADD COLUMN max_per_second double precision
	CONSTRAINT routes_max_per_second_check
	CHECK (max_per_second > 0 AND max_per_second <= 1000000);

COMMENT ON COLUMN notifier.routes.max_per_second IS
'the most messages (requests) per second the route sends; NULL: no limit';

-- A NATS route's subject template (see "NATS JetStream sink" below, with
-- the route's other columns and the check that only NATS routes have one).
-- Here, before notifier.route_list is made again below: it shows the column.
ALTER TABLE notifier.routes ADD COLUMN subject text;

-- the column changes type: the view that shows it is made again, with its grants
DO $$
DECLARE
	saved_acl aclitem[];
BEGIN
	SELECT c.relacl INTO saved_acl FROM pg_catalog.pg_class c
	 WHERE c.oid OPERATOR(pg_catalog.=) 'notifier.route_list'::pg_catalog.regclass;
	DROP VIEW notifier.route_list;
	ALTER TABLE notifier.routes
		ALTER COLUMN ordered TYPE notifier.ordering
		USING CASE WHEN ordered THEN 'route' WHEN NOT ordered THEN 'none' END::notifier.ordering;
	CREATE VIEW notifier.route_list AS
	SELECT r.id,
		   r.channel,
		   r.kind,
		   coalesce(r.queue_table::text,
					CASE WHEN notifier.can_manage_routes() THEN r.url
						 ELSE notifier.masked_url(r.url) END) AS target,
		   CASE WHEN notifier.can_manage_routes() THEN r.headers
				ELSE (SELECT coalesce(pg_catalog.jsonb_object_agg(h.key, '"********"'::jsonb),
									  '{}'::jsonb)
						FROM pg_catalog.jsonb_each(r.headers) h) END AS headers,
		   CASE WHEN r.secret IS NOT NULL THEN '********' END AS secret,
		   r.batch_size,
		   r.max_attempts,
		   r.timeout_ms,
		   r.concurrency,
		   r.ordered,
		   r.created_at,
		   r.filter,
		   r.transform,
		   r.owner,
		   r.max_per_second,
		   r.subject
	  FROM notifier.routes r;
	PERFORM notifier.copy_grants(saved_acl, 'TABLE', 'notifier.route_list');
END
$$;
REVOKE ALL ON notifier.route_list FROM PUBLIC;
GRANT SELECT ON notifier.route_list TO pg_monitor;

-- add_webhook() with ordered notifier.ordering (and disable_after: see
-- "Disabling dead endpoints" below), with the grants of 0.1's
CREATE FUNCTION notifier.add_webhook(
	channel		text,
	url			text,
	headers		jsonb DEFAULT '{}',
	secret		text DEFAULT NULL,
	batch_size	integer DEFAULT 1,
	max_attempts integer DEFAULT 10,
	timeout_ms	integer DEFAULT 5000,
	concurrency integer DEFAULT 8,
	ordered		notifier.ordering DEFAULT 'none',
	filter		jsonpath DEFAULT NULL,
	transform	regprocedure DEFAULT NULL,
	max_per_second double precision DEFAULT NULL,
	disable_after interval DEFAULT '5 days')
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_add_webhook'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval) IS
'route the events of a channel to an HTTP endpoint (POST); returns the route id';

REVOKE ALL ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval) FROM PUBLIC;
SELECT notifier.copy_grants(p.proacl, 'FUNCTION',
		'notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)')
  FROM pg_catalog.pg_proc p
 WHERE p.oid OPERATOR(pg_catalog.=)
	   'notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, boolean)'::pg_catalog.regprocedure;

CREATE OR REPLACE FUNCTION notifier.can_manage_routes()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.has_function_privilege(
	'notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)'::pg_catalog.regprocedure,
	'EXECUTE')
$$;

DROP FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, boolean);

-- The key of a delivery of a route ordered by key: a hash of the event's
-- schema, table and key (0 for an event without them).  Two keys of one
-- hash are ordered together: more order than asked, never less.
ALTER TABLE notifier.deliveries ADD COLUMN order_key bigint;

COMMENT ON COLUMN notifier.deliveries.order_key IS
'for a route ordered by key: a hash of the event''s schema, table and key; the rows of one key are sent one after the other';

-- A row of a key may go when no earlier row of its key is pending or in flight.
CREATE INDEX deliveries_order_key_idx ON notifier.deliveries (route_id, order_key, id)
	WHERE order_key IS NOT NULL AND status IN ('pending', 'in_flight');

-- Routes you can run for years: secret rotation.  set_secret() keeps the
-- previous secret until previous_secret_until; meanwhile every request
-- carries both signatures.  Like secret, these columns are in
-- notifier.routes only, which no role but its owner reads.
ALTER TABLE notifier.routes
	ADD COLUMN previous_secret text,
	ADD COLUMN previous_secret_until timestamptz;

COMMENT ON COLUMN notifier.routes.previous_secret IS
'the secret set_secret() replaced; requests are signed with it too until previous_secret_until';

CREATE FUNCTION notifier.set_secret(
	route_id	bigint,
	secret		text,
	keep_previous interval DEFAULT '24 hours')
RETURNS void
AS 'MODULE_PATHNAME', 'notifier_set_secret'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.set_secret(bigint, text, interval) IS
'give a webhook route a new secret; requests carry the signature of the previous one too for keep_previous';

REVOKE ALL ON FUNCTION notifier.set_secret(bigint, text, interval) FROM PUBLIC;

-- Routes you can run for years: pause and resume.  A paused webhook route
-- keeps its events in notifier.deliveries (the worker still writes them)
-- and sends none; resumed, they flow in order, nothing lost.
ALTER TABLE notifier.routes ADD COLUMN paused boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN notifier.routes.paused IS
'set by pause_route(): the route''s deliveries are kept, not sent, until resume_route()';

-- pause_route() and resume_route(); by its owner only.  resume_route() also
-- enables a route the worker disabled (see "Disabling dead endpoints" at the
-- end: its columns, and route_state_changed(), which tells of the change):
-- its failures are forgotten (failing_since), disable_after counts again from
-- its next failure.  pause_route() of a disabled route leaves it disabled.
CREATE FUNCTION notifier.set_route_paused(route_id bigint, paused boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	was_disabled boolean;
	was_paused boolean;
BEGIN
	IF route_id IS NULL THEN
		RAISE EXCEPTION 'route_id must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'See notifier.route_list for the routes.';
	END IF;
	SELECT r.disabled_at IS NOT NULL, r.paused INTO was_disabled, was_paused
	  FROM notifier.routes r
	 WHERE r.id = set_route_paused.route_id AND r.kind IN ('webhook', 'nats')
	   FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'webhook or NATS route % does not exist', route_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'See notifier.route_list for the routes.';
	END IF;
	IF set_route_paused.paused THEN
		UPDATE notifier.routes r SET paused = true
		 WHERE r.id = set_route_paused.route_id;
		IF NOT was_disabled AND NOT was_paused THEN
			PERFORM notifier.route_state_changed(route_id, 'paused', 'pause_route()');
		END IF;
	ELSE
		UPDATE notifier.routes r
		   SET paused = false, disabled_at = NULL, disabled_reason = NULL,
			   failing_since = NULL
		 WHERE r.id = set_route_paused.route_id;
		IF was_disabled OR was_paused THEN
			PERFORM notifier.route_state_changed(route_id, 'active', NULL);
		END IF;
	END IF;
END
$$;

REVOKE ALL ON FUNCTION notifier.set_route_paused(bigint, boolean) FROM PUBLIC;

CREATE FUNCTION notifier.pause_route(route_id bigint)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT notifier.set_route_paused(route_id, true) $$;

CREATE FUNCTION notifier.resume_route(route_id bigint)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT notifier.set_route_paused(route_id, false) $$;

COMMENT ON FUNCTION notifier.pause_route(bigint) IS
'stop sending a webhook route''s events; they are kept until resume_route()';
COMMENT ON FUNCTION notifier.resume_route(bigint) IS
'send a paused or disabled webhook route''s events again, the kept ones first';

REVOKE ALL ON FUNCTION notifier.pause_route(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.resume_route(bigint) FROM PUBLIC;

-- Disabling dead endpoints (issue 19): the columns, here because
-- notifier.stats below shows them; the rest is in the section of that name
-- at the end.  disable_after: continuous failure for that long disables the
-- route (NULL: never); failing_since: the first failure after the last
-- success (the worker's bookkeeping); disabled_at, disabled_reason: set when
-- a 410 Gone or disable_after disabled the route, cleared by resume_route().
ALTER TABLE notifier.routes
	ADD COLUMN disable_after interval DEFAULT '5 days',
	ADD COLUMN failing_since timestamptz,
	ADD COLUMN disabled_at timestamptz,
	ADD COLUMN disabled_reason text,
	ADD CONSTRAINT routes_disable_after_check CHECK (disable_after > interval '0'),
	ADD CONSTRAINT routes_disabled_check CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL));

-- NATS JetStream sink (issue 17): the state of a route's connection, shown
-- as the last column of notifier.stats (worker/sinks/nats_sink.c)
CREATE FUNCTION notifier.route_connections(
	OUT route_id bigint,
	OUT connection text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'notifier_route_connections'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION notifier.route_connections() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notifier.route_connections() TO pg_monitor;

-- notifier.stats: the route's state and why (state_reason), then filtered
-- (route filter), then the connection of a NATS route.
-- route_stats() gains filtered: the view that reads it is made again, with
-- the grants of both.
DO $$
DECLARE
	saved_view_acl aclitem[];
	saved_fn_acl aclitem[];
BEGIN
	SELECT c.relacl INTO saved_view_acl FROM pg_catalog.pg_class c
	 WHERE c.oid OPERATOR(pg_catalog.=) 'notifier.stats'::pg_catalog.regclass;
	SELECT p.proacl INTO saved_fn_acl FROM pg_catalog.pg_proc p
	 WHERE p.oid OPERATOR(pg_catalog.=) 'notifier.route_stats()'::pg_catalog.regprocedure;
	DROP VIEW notifier.stats;
	DROP FUNCTION notifier.route_stats();
	CREATE FUNCTION notifier.route_stats(
		OUT route_id bigint,
		OUT received bigint,
		OUT written bigint,
		OUT errors bigint,
		OUT last_event_at timestamptz,
		OUT last_error text,
		OUT last_error_at timestamptz,
		OUT delivered bigint,
		OUT retried bigint,
		OUT dead bigint,
		OUT last_http_status integer,
		OUT latency_p50_ms double precision,
		OUT latency_p99_ms double precision,
		OUT filtered bigint)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'notifier_route_stats'
	LANGUAGE C STRICT VOLATILE;
	REVOKE ALL ON FUNCTION notifier.route_stats() FROM PUBLIC;
	PERFORM notifier.copy_grants(saved_fn_acl, 'FUNCTION', 'notifier.route_stats()');

CREATE VIEW notifier.stats AS
SELECT r.id AS route_id,
	   r.channel,
	   r.kind,
	   coalesce(r.queue_table::text,
				CASE WHEN notifier.can_manage_routes() THEN r.url
					 ELSE notifier.masked_url(r.url) END) AS target,
	   coalesce(s.received, 0) AS received,
	   coalesce(s.written, 0) AS written,
	   coalesce(s.errors, 0) AS errors,
	   d.pending,
	   d.in_flight,
	   coalesce(s.delivered, 0) AS delivered,
	   coalesce(s.retried, 0) AS retried,
	   coalesce(s.dead, 0) AS dead,
	   s.last_http_status,
	   s.latency_p50_ms,
	   s.latency_p99_ms,
	   ob.events AS outbox_events,
	   ob.oldest_age AS outbox_oldest_age,
	   s.last_event_at,
	   s.last_error,
	   s.last_error_at,
	   w.pid AS worker_pid,
	   w.state AS worker_state,
	   pg_catalog.pg_notification_queue_usage() AS queue_usage,
	   CASE WHEN r.disabled_at IS NOT NULL THEN 'disabled'
			WHEN r.paused THEN 'paused' ELSE 'active' END AS state,
	   r.disabled_reason AS state_reason,
	   coalesce(s.filtered, 0) AS filtered,
	   c.connection
  FROM notifier.routes r
  LEFT JOIN notifier.route_stats() s ON s.route_id = r.id
  LEFT JOIN notifier.route_connections() c ON c.route_id = r.id
  LEFT JOIN notifier.status() w ON w.database = pg_catalog.current_database()
  LEFT JOIN LATERAL (
	SELECT count(*) FILTER (WHERE x.status = 'pending') AS pending,
		   count(*) FILTER (WHERE x.status = 'in_flight') AS in_flight
	  FROM notifier.deliveries x
	 WHERE x.route_id = r.id AND x.status IN ('pending', 'in_flight')
	   AND r.kind IN ('webhook', 'nats')) d ON true
  LEFT JOIN LATERAL (
	SELECT count(*) AS events,
		   pg_catalog.now() - min(o.created_at) AS oldest_age
	  FROM notifier.outbox o
	 WHERE o.channel = r.channel) ob ON true;
	REVOKE ALL ON notifier.stats FROM PUBLIC;
	PERFORM notifier.copy_grants(saved_view_acl, 'TABLE', 'notifier.stats');
END
$$;

DROP FUNCTION notifier.copy_grants(aclitem[], text, text);

--
-- replay(): the retained delivered events of a webhook route sent again, as
-- new deliveries under their own event ids (a receiver that keeps the ids it
-- has seen will drop them: replay is for receivers that lost their copy).
-- Delivered rows are retained for pg_notifier.retention (a day by default).
--
CREATE FUNCTION notifier.replay(route_id bigint, since timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF route_id IS NULL OR since IS NULL THEN
		RAISE EXCEPTION 'route_id and since must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'replay(route_id, since) sends again the delivered events received since then.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM notifier.routes r
					WHERE r.id = replay.route_id AND r.kind IN ('webhook', 'nats')) THEN
		RAISE EXCEPTION 'webhook or NATS route % does not exist', route_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'See notifier.route_list for the routes.';
	END IF;
	INSERT INTO notifier.deliveries (route_id, event_id, payload, received_at, order_key)
	SELECT d.route_id, d.event_id, d.payload, pg_catalog.now(), d.order_key
	  FROM notifier.deliveries d
	 WHERE d.route_id = replay.route_id AND d.status = 'delivered'
	   AND d.received_at >= replay.since
	 ORDER BY d.id;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM pg_notify('pg_notifier_control', 'deliveries');
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION notifier.replay(bigint, timestamptz) FROM PUBLIC;

COMMENT ON FUNCTION notifier.replay(bigint, timestamptz) IS
'send again the delivered events of a webhook route received since a time (retained for pg_notifier.retention); returns how many';

-- ---------------------------------------------------------------------------
-- Disabling dead endpoints (issue 19)
-- ---------------------------------------------------------------------------

-- The columns are above, before notifier.stats.  A webhook route is disabled
-- by the worker (worker/route_health.c) when its endpoint answers 410 Gone,
-- or when no request of it has succeeded for disable_after since its first
-- failure after the last success.  A disabled route is like a paused one:
-- its events are kept in notifier.deliveries, none is sent, until
-- resume_route().  Every change of a route's state is told on channel
-- pg_notifier_events, in the transaction that makes it, as JSON
-- {"route": id, "state": "disabled", "reason": "..."}; any role of the
-- database may LISTEN to it, so a reason never holds a URL or a response.
COMMENT ON COLUMN notifier.routes.disable_after IS
'continuous failure for this long disables the route; NULL: never';
COMMENT ON COLUMN notifier.routes.failing_since IS
'the first failed request after the last successful one; NULL: the last request succeeded';
COMMENT ON COLUMN notifier.routes.disabled_reason IS
'why the worker disabled the route (410 Gone, disable_after); resume_route() clears it';

-- The NOTIFY of a route's new state; the worker sends it too.
CREATE FUNCTION notifier.route_state_changed(route_id bigint, state text, reason text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.pg_notify('pg_notifier_events',
		 pg_catalog.jsonb_build_object('route', route_id, 'state', state,
									   'reason', pg_catalog.left(reason, 200))::text)
$$;
REVOKE ALL ON FUNCTION notifier.route_state_changed(bigint, text, text) FROM PUBLIC;

COMMENT ON FUNCTION notifier.route_state_changed(bigint, text, text) IS
'NOTIFY pg_notifier_events of a route''s new state (active, paused, disabled) and why';

-- ---------------------------------------------------------------------------
-- Queue sink (issue 18): read with a visibility timeout, ack, nack, max_reads
-- ---------------------------------------------------------------------------

-- pop() deletes on read: a consumer with side effects must hold its
-- transaction open while it works, or lose the event when it dies after the
-- pop.  read() instead hides the events it returns until vt (read_ct + 1);
-- ack() removes them, nack() shows them again; an event not acked in time is
-- read again.  Both columns have constant defaults (no table rewrite); a
-- NULL vt is an event never read.  Only notifier.queue has them: custom
-- queue tables are consumed by their own SQL, as with pop().
ALTER TABLE notifier.queue
	ADD COLUMN vt timestamptz,
	ADD COLUMN read_ct integer NOT NULL DEFAULT 0;

-- read() writes vt and read_ct, neither indexed: with room on the page,
-- the new version is a heap-only tuple (HOT), which adds nothing to the
-- table's two indexes, where a consumer's scan would otherwise walk one
-- more dead entry per event read until the next VACUUM.  An event fills
-- about 300 bytes: half of each page is left to the first read of its
-- events.  Set on the table, not rewritten: pages written from now on.
ALTER TABLE notifier.queue SET (fillfactor = 50);

-- The (channel, id) index serves one channel's oldest events (read(), and
-- pop() of a channel) and nothing else.  Partial on a predicate every row
-- meets, it can be used only by a query that compares the channel: a
-- lookup by id alone (ack(), nack(), the rows read() and pop() took) always
-- goes to the primary key.  Otherwise a generic plan made while the
-- statistics say the table is empty may read the whole (channel, id) index
-- for "id = ANY (...)" -- for no rows as cheap as the primary key -- and
-- keep doing so as the queue grows, until the next ANALYZE.
DROP INDEX notifier.queue_channel_id_idx;
CREATE INDEX queue_channel_id_idx ON notifier.queue (channel, id)
	WHERE channel IS NOT NULL;

COMMENT ON COLUMN notifier.queue.vt IS
'hidden from read() and pop() until then (set by read() and nack()); NULL: never read';
COMMENT ON COLUMN notifier.queue.read_ct IS
'how many times read() returned the event';

-- A queue route's poison limit: an event of notifier.queue that read()
-- would return for the (max_reads + 1)th time goes to notifier.dead_letters
-- instead, with the reason.  NULL: no limit.
ALTER TABLE notifier.routes
	ADD COLUMN max_reads integer,
	ADD CONSTRAINT routes_max_reads_check
		CHECK (max_reads IS NULL
			   OR (max_reads > 0 AND kind = 'queue'
				   AND queue_table = 'notifier.queue'::pg_catalog.regclass));

-- (add_queue() takes max_reads: see "add_queue() with filter and
-- transform" above, where it is made once with every 0.2 argument.)

-- read(): the oldest visible events of a channel of notifier.queue, hidden
-- for vt.  Needs SELECT and UPDATE on notifier.queue (pop() needs SELECT
-- and DELETE); dead-lettering a poison event runs as the table's owner
-- (api/queue_api.c).  Concurrent readers never get the same event inside
-- its vt (SKIP LOCKED, then the vt written in the same statement).
CREATE FUNCTION notifier.read(channel text, vt interval, max integer DEFAULT 100)
RETURNS TABLE (id bigint, channel text, payload jsonb, received_at timestamptz,
			   read_ct integer, vt timestamptz)
AS 'MODULE_PATHNAME', 'notifier_read'
LANGUAGE C CALLED ON NULL INPUT VOLATILE ROWS 100;

COMMENT ON FUNCTION notifier.read(text, interval, integer) IS
'return the oldest visible events of a channel of notifier.queue and hide them for vt (until ack() or nack())';

-- ack(): the events are done: removed.  Needs DELETE on notifier.queue.
-- nack(): the events are given back, visible again after delay; the read
-- count stays (max_reads still counts).  Needs UPDATE on notifier.queue.
-- Both run as their caller (api/queue_api.c).
CREATE FUNCTION notifier.ack(ids bigint[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_ack'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.ack(bigint[]) IS
'remove events that notifier.read() returned; returns how many were removed';

CREATE FUNCTION notifier.nack(ids bigint[], delay interval DEFAULT '0')
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_nack'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.nack(bigint[], interval) IS
'make events that notifier.read() returned visible again after delay; returns how many';

-- pop() takes no event that read() or nack() hides: it picks the oldest
-- visible ones, then deletes what it picked.  Its plans are made for the
-- indexes whatever notifier.queue's statistics say (no sequential or bitmap
-- scan, no sort, and so no JIT: a plan made just after a drain, when the
-- table is empty, is kept until the next ANALYZE, see plan_for_indexes() in
-- common/extension.c); one channel's oldest events then come from the
-- (channel, id) index in its order, the channel compared as a range so that
-- "ORDER BY s.channel, s.id" is an order no other index gives (with "=",
-- the primary key would do as well for the planner, walked through every
-- other channel's rows).
CREATE OR REPLACE FUNCTION notifier.pop(channel text DEFAULT NULL, max integer DEFAULT 100)
RETURNS SETOF notifier.queue
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET jit = off
AS $$
DECLARE
	picked bigint[];
BEGIN
	IF max IS NULL OR max < 1 THEN
		RAISE EXCEPTION 'max must be a positive number of events, not %', coalesce(max::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'notifier.pop(channel, max) returns at most max events.';
	END IF;
	IF channel IS NULL THEN
		picked := ARRAY(SELECT s.id FROM notifier.queue s
						 WHERE s.vt IS NULL OR s.vt <= clock_timestamp()
						 ORDER BY s.id LIMIT max FOR UPDATE SKIP LOCKED);
	ELSE
		picked := ARRAY(SELECT s.id FROM notifier.queue s
						 WHERE s.channel >= pop.channel AND s.channel <= pop.channel
						   AND (s.vt IS NULL OR s.vt <= clock_timestamp())
						 ORDER BY s.channel, s.id LIMIT max FOR UPDATE SKIP LOCKED);
	END IF;
	RETURN QUERY
	WITH taken AS (DELETE FROM notifier.queue q WHERE q.id = ANY (picked) RETURNING q.*)
	SELECT * FROM taken ORDER BY id;
END
$$;

-- Backfill (issue 18): notifier.backfill(), notifier.backfills,
-- notifier.cancel_backfill()
-- ---------------------------------------------------------------------------

-- One row per backfill: what to read (relation, channel, "where"), as whom
-- (role: the caller of backfill(); the worker reads as that role), and how
-- far it got: last_key is the highest key sent (each key column's text
-- form), written in the transaction that wrote the batch's events to the
-- outbox, so a backfill resumes after any crash exactly where it stopped.
-- Not dumped: a role's OID means nothing in another cluster.
CREATE TABLE notifier.backfill_jobs (
	id				bigserial PRIMARY KEY,
	relid			oid NOT NULL,
	channel			text NOT NULL,
	role			oid NOT NULL,
	"where"			text,
	batch_size		integer NOT NULL CHECK (batch_size > 0),
	state			text NOT NULL DEFAULT 'running'
					CHECK (state IN ('running', 'done', 'cancelled', 'failed')),
	rows_sent		bigint NOT NULL DEFAULT 0,
	rows_estimated	bigint,
	last_key		text[],
	started_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	finished_at		timestamptz,
	last_error		text,
	failures		integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX backfill_jobs_running_idx ON notifier.backfill_jobs (next_attempt_at, id)
	WHERE state = 'running';
REVOKE ALL ON notifier.backfill_jobs FROM PUBLIC;
REVOKE ALL ON SEQUENCE notifier.backfill_jobs_id_seq FROM PUBLIC;

CREATE FUNCTION notifier.backfill(
	relation	regclass,
	channel		text DEFAULT NULL,
	"where"		text DEFAULT NULL,
	batch_size	integer DEFAULT 1000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_backfill'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.backfill(regclass, text, text, integer) IS
'send one READ event per existing row of a watched table to the routes of its channel, in the background; returns the backfill id (see notifier.backfills)';

-- Sending events to routes is managing routes: granted to no one by default.
REVOKE ALL ON FUNCTION notifier.backfill(regclass, text, text, integer) FROM PUBLIC;

-- The backfills the reader started (or a role it has the privileges of),
-- and those of the tables it may SELECT from, unless row security may hide
-- some of their rows from it: last_key shows a key.
CREATE VIEW notifier.backfills AS
SELECT b.id,
	   b.relid::pg_catalog.regclass AS "table",
	   b.channel,
	   b.state,
	   b.rows_sent,
	   b.rows_estimated,
	   b.last_key,
	   b.started_at,
	   b.finished_at,
	   b.last_error
  FROM notifier.backfill_jobs b
 WHERE pg_catalog.pg_has_role(b.role, 'USAGE')
	OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c
				WHERE c.oid = b.relid AND NOT c.relrowsecurity
				  AND pg_catalog.has_table_privilege(c.oid, 'SELECT'));
GRANT SELECT ON notifier.backfills TO PUBLIC;

-- Stop a running backfill: its role (or a role that has its privileges) or
-- a superuser.  Returns false when it had already finished.
CREATE FUNCTION notifier.cancel_backfill(backfill_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'notifier_cancel_backfill'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
REVOKE ALL ON FUNCTION notifier.cancel_backfill(bigint) FROM PUBLIC;

COMMENT ON FUNCTION notifier.cancel_backfill(bigint) IS
'stop a running backfill (state cancelled); false when it had already finished';

-- ---------------------------------------------------------------------------
-- NATS JetStream sink (issue 17)
-- ---------------------------------------------------------------------------

-- A NATS route is a remote route of the delivery engine like a webhook: its
-- events go through notifier.deliveries, one JetStream publish per event,
-- delivered on the PubAck (worker/sinks/nats_sink.c).  url holds its server
-- URLs (comma-separated nats:// or tls://, without credentials), secret its
-- token or password (masked in route_list and stats like a webhook secret),
-- headers its own headers; batch_size is how many events (each its own
-- publish) one message of the engine carries: 100, 1 for ordered => 'route'
-- and with max_per_second (the engine's rate counts messages: one message
-- per event makes it publishes per second).
ALTER TABLE notifier.routes DROP CONSTRAINT routes_kind_check;
ALTER TABLE notifier.routes
	ADD CONSTRAINT routes_kind_check CHECK (kind IN ('queue', 'webhook', 'nats'));
ALTER TABLE notifier.routes DROP CONSTRAINT routes_webhook_check;
ALTER TABLE notifier.routes
	ADD CONSTRAINT routes_webhook_check
		CHECK ((kind IN ('webhook', 'nats')) = (url IS NOT NULL AND headers IS NOT NULL AND
												batch_size > 0 AND max_attempts > 0 AND
												timeout_ms > 0 AND concurrency > 0 AND
												ordered IS NOT NULL));
ALTER TABLE notifier.routes
	ADD COLUMN nats_username text,
	ADD COLUMN creds_file text,
	ADD COLUMN tls_ca_file text,
	ADD COLUMN tls_cert_file text,
	ADD COLUMN tls_key_file text,
	ADD CONSTRAINT routes_nats_check
		CHECK ((kind = 'nats') = (subject IS NOT NULL));

COMMENT ON COLUMN notifier.routes.subject IS
'a NATS route''s subject template: {channel}, {schema}, {table} and {op} are replaced by the event''s, lower case';
COMMENT ON COLUMN notifier.routes.secret IS
'a webhook route''s signing secret; a NATS route''s token, or the password of nats_username';

CREATE FUNCTION notifier.add_nats(
	channel		text,
	urls		text,
	subject		text DEFAULT 'pg_notifier.{channel}',
	token		text DEFAULT NULL,
	username	text DEFAULT NULL,
	password	text DEFAULT NULL,
	creds_file	text DEFAULT NULL,
	tls_ca_file text DEFAULT NULL,
	headers		jsonb DEFAULT '{}',
	max_attempts integer DEFAULT 10,
	timeout_ms	integer DEFAULT 5000,
	concurrency integer DEFAULT 64,
	ordered		notifier.ordering DEFAULT 'none',
	filter		jsonpath DEFAULT NULL,
	transform	regprocedure DEFAULT NULL,
	tls_cert_file text DEFAULT NULL,
	tls_key_file text DEFAULT NULL,
	max_per_second double precision DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_add_nats'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.add_nats(text, text, text, text, text, text, text, text, jsonb, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, text, text, double precision) IS
'route the events of a channel to NATS JetStream (one publish per event, delivered on its PubAck); returns the route id';

REVOKE ALL ON FUNCTION notifier.add_nats(text, text, text, text, text, text, text, text, jsonb, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, text, text, double precision) FROM PUBLIC;

-- redeliver_dead() of any remote route: a NATS route's dead events are
-- rows of notifier.deliveries like a webhook route's, and go again the same
-- way (the rows of a dead batch all become pending: its message is sent
-- whole, from attempt 1).
CREATE OR REPLACE FUNCTION notifier.redeliver_dead(route_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF route_id IS NULL THEN
		RAISE EXCEPTION 'route_id must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'See notifier.route_list for the routes.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM notifier.routes r
					WHERE r.id = redeliver_dead.route_id AND r.kind IN ('webhook', 'nats')) THEN
		RAISE EXCEPTION 'webhook or NATS route % does not exist', route_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'See notifier.route_list for the routes.';
	END IF;
	UPDATE notifier.deliveries d
	   SET status = 'pending', attempts = 0, next_attempt_at = now(),
		   updated_at = now()
	 WHERE d.route_id = redeliver_dead.route_id AND d.status = 'dead';
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM pg_notify('pg_notifier_control', 'deliveries');
	RETURN n;
END
$$;

COMMENT ON FUNCTION notifier.redeliver_dead(bigint) IS
'every dead delivery of a webhook or NATS route becomes pending again; returns how many';

-- Keep these last: once everything above is committed, the launcher starts
-- the worker ('*'), or the waiting worker of a listed database takes it in.
SELECT notifier.worker_start();
SELECT pg_catalog.pg_notify('pg_notifier_control', 'installed');
