/* src/pg_notifier--0.1.sql -- the SQL API of pg_notifier */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_notifier" to load this file. \quit

--
-- Capture: the trigger function.  Options are 'name=value' trigger arguments;
-- notifier.watch() is the friendly way to create the triggers.
--
CREATE FUNCTION notifier.notify_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'notify_change'
LANGUAGE C;

COMMENT ON FUNCTION notifier.notify_change() IS
'trigger function: sends each change of the table as a JSON event with NOTIFY';

--
-- Oversize events (on_oversize = reference) are stored here; the NOTIFY
-- carries {"ref":id,"truncated":true} instead of the full event.
--
CREATE TABLE notifier.payloads (
	id			bigserial PRIMARY KEY,
	event		json NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payloads_created_at_idx ON notifier.payloads (created_at);
REVOKE ALL ON notifier.payloads FROM PUBLIC;

--
-- The outbox (delivery => 'outbox'): the trigger writes each event here, in
-- the transaction that made the change, with no size limit; the worker moves
-- committed events to the routes of their channel (and, where "notify" is
-- set, sends that NOTIFY payload) and deletes them in the same transaction.
-- The trigger inserts directly into the table and its index: no privilege
-- on it is needed, and no trigger or rule on it fires.  Events wait here
-- until their channel has a route (or is notified).
--
-- Rows live for milliseconds; autovacuum is told to clean up after every
-- 10,000 of them rather than after a fraction of the table.
--
CREATE TABLE notifier.outbox (
	id			bigserial PRIMARY KEY,
	channel		text NOT NULL,
	event		json NOT NULL,
	notify		text,
	created_at	timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0,
		autovacuum_vacuum_threshold = 10000,
		autovacuum_vacuum_insert_scale_factor = 0,
		autovacuum_vacuum_insert_threshold = 10000,
		autovacuum_vacuum_cost_delay = 0);
REVOKE ALL ON notifier.outbox FROM PUBLIC;
REVOKE ALL ON SEQUENCE notifier.outbox_id_seq FROM PUBLIC;

COMMENT ON COLUMN notifier.outbox.notify IS
'the NOTIFY payload the worker sends on the channel (watch option notify), or NULL';
COMMENT ON COLUMN notifier.outbox.created_at IS
'the "ts" of the event: the start of the statement that made the change';

-- Anyone who can LISTEN can read any NOTIFY payload; a stored oversize event
-- is readable on the same terms, through this function only.
CREATE FUNCTION notifier.payload(ref bigint)
RETURNS json
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result json;
BEGIN
	IF ref IS NULL THEN
		RAISE EXCEPTION 'payload reference must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the "ref" value of an event that has "truncated":true.';
	END IF;
	SELECT p.event INTO result FROM notifier.payloads p WHERE p.id = ref;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no stored event with ref %', ref
			USING ERRCODE = 'no_data_found',
				  HINT = 'The event has been removed from notifier.payloads, or the reference never existed.';
	END IF;
	RETURN result;
END
$$;
GRANT EXECUTE ON FUNCTION notifier.payload(bigint) TO PUBLIC;

--
-- watch() / unwatch(): create and drop the triggers of one (table, channel).
--
CREATE FUNCTION notifier.watch(
	relation	regclass,
	channel		text DEFAULT NULL,
	payload		text DEFAULT 'row',
	columns		text[] DEFAULT NULL,
	exclude		text[] DEFAULT NULL,
	events		text[] DEFAULT ARRAY['insert', 'update', 'delete', 'truncate'],
	condition	text DEFAULT NULL,
	"coalesce"	boolean DEFAULT true,
	level		text DEFAULT 'row',
	on_oversize text DEFAULT 'reference',
	delivery	text DEFAULT 'notify',
	notify		boolean DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'notifier_watch'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.watch(regclass, text, text, text[], text[], text[], text, boolean, text, text, text, boolean) IS
'send the changes of a table as JSON events on a channel; returns the channel';

CREATE FUNCTION notifier.unwatch(relation regclass, channel text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'notifier_unwatch'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.unwatch(regclass, text) IS
'stop sending the changes of a table on a channel; false if it was not watched';

-- The options of one notify_change trigger, parsed from its arguments.
CREATE FUNCTION notifier.watch_options(
	trigger_oid oid,
	OUT channel text,
	OUT payload text,
	OUT columns text[],
	OUT exclude text[],
	OUT events text[],
	OUT condition text,
	OUT "coalesce" boolean,
	OUT level text,
	OUT on_oversize text,
	OUT delivery text,
	OUT notify boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'notifier_watch_options'
LANGUAGE C STRICT STABLE;

CREATE VIEW notifier.watches AS
SELECT t.tgrelid::regclass AS "table",
	   o.channel,
	   o.payload,
	   o.columns,
	   o.exclude,
	   o.events,
	   o.condition,
	   o."coalesce",
	   o.level,
	   o.on_oversize,
	   o.delivery,
	   o.notify,
	   array_agg(t.tgname::text ORDER BY t.tgname) AS triggers
  FROM pg_catalog.pg_trigger t,
	   LATERAL notifier.watch_options(t.oid) o
 WHERE t.tgfoid = 'notifier.notify_change()'::pg_catalog.regprocedure
   AND t.tgparentid = 0
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12;

GRANT USAGE ON SCHEMA notifier TO PUBLIC;
GRANT SELECT ON notifier.watches TO PUBLIC;

--
-- Capture counters, kept in shared memory (needs shared_preload_libraries).
--
CREATE FUNCTION notifier.capture_stats(
	OUT events_sent bigint,
	OUT oversize_referenced bigint,
	OUT oversize_keys bigint,
	OUT oversize_skipped bigint,
	OUT noop_updates bigint,
	OUT outbox_written bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'notifier_capture_stats'
LANGUAGE C STRICT VOLATILE;

--
-- Forwarding: the background worker delivers the events of routed channels.
--

-- The default queue table of add_queue(); any table with compatible columns
-- (channel text, payload jsonb or json, optionally received_at timestamptz,
-- every other column nullable or with a default) can be a queue.
CREATE TABLE notifier.queue (
	id			bigserial PRIMARY KEY,
	channel		text NOT NULL,
	payload		jsonb NOT NULL,
	received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_channel_id_idx ON notifier.queue (channel, id);
REVOKE ALL ON notifier.queue FROM PUBLIC;

CREATE TABLE notifier.routes (
	id			bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	channel		text NOT NULL,
	kind		text NOT NULL,
	queue_table regclass,
	url			text,
	headers		jsonb,
	secret		text,
	batch_size	integer,
	max_attempts integer,
	timeout_ms	integer,
	concurrency integer,
	ordered		boolean,
	created_at	timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT routes_channel_check
		CHECK (channel <> '' AND octet_length(channel) < 64),
	CONSTRAINT routes_kind_check CHECK (kind IN ('queue', 'webhook')),
	CONSTRAINT routes_queue_table_check
		CHECK ((kind = 'queue') = (queue_table IS NOT NULL)),
	CONSTRAINT routes_webhook_check
		CHECK ((kind = 'webhook') = (url IS NOT NULL AND headers IS NOT NULL AND
									 batch_size > 0 AND max_attempts > 0 AND
									 timeout_ms > 0 AND concurrency > 0 AND
									 ordered IS NOT NULL))
);
CREATE INDEX routes_channel_idx ON notifier.routes (channel);
REVOKE ALL ON notifier.routes FROM PUBLIC;

-- Any change of routes wakes the worker, which reloads them at once.
CREATE FUNCTION notifier.routes_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM pg_notify('pg_notifier_control', 'routes');
	RETURN NULL;
END
$$;

CREATE TRIGGER routes_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notifier.routes
	FOR EACH STATEMENT EXECUTE FUNCTION notifier.routes_changed();

CREATE FUNCTION notifier.add_queue(
	channel		text,
	queue_table regclass DEFAULT 'notifier.queue')
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_add_queue'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.add_queue(text, regclass) IS
'route the events of a channel into a queue table; returns the route id';

-- Webhook deliveries: one row per event and webhook route, written by the
-- worker in the transaction that drains the NOTIFY queue; delivery runs from
-- here, so nothing in this table is lost by a crash or restart.
CREATE TABLE notifier.deliveries (
	id			bigserial PRIMARY KEY,
	route_id	bigint NOT NULL,
	event_id	text,
	payload		json NOT NULL,
	status		text NOT NULL DEFAULT 'pending',
	attempts	integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	last_http_status integer,
	last_error	text,
	received_at timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	delivered_at timestamptz,
	CONSTRAINT deliveries_status_check
		CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead'))
);
-- small indexes for the worker's queries: only rows still to deliver
CREATE INDEX deliveries_pending_idx ON notifier.deliveries (route_id, id)
	WHERE status = 'pending';
CREATE INDEX deliveries_in_flight_idx ON notifier.deliveries (route_id)
	WHERE status = 'in_flight';
CREATE INDEX deliveries_delivered_idx ON notifier.deliveries (updated_at)
	WHERE status = 'delivered';
REVOKE ALL ON notifier.deliveries FROM PUBLIC;

CREATE FUNCTION notifier.add_webhook(
	channel		text,
	url			text,
	headers		jsonb DEFAULT '{}',
	secret		text DEFAULT NULL,
	batch_size	integer DEFAULT 1,
	max_attempts integer DEFAULT 10,
	timeout_ms	integer DEFAULT 5000,
	concurrency integer DEFAULT 8,
	ordered		boolean DEFAULT false)
RETURNS bigint
AS 'MODULE_PATHNAME', 'notifier_add_webhook'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, boolean) IS
'route the events of a channel to an HTTP endpoint (POST); returns the route id';

CREATE FUNCTION notifier.remove_route(id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'notifier_remove_route'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.remove_route(bigint) IS
'remove a route and its deliveries: the worker stops forwarding to it at once';

-- Send dead deliveries again (from attempt 1).
CREATE FUNCTION notifier.redeliver(delivery_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current_status text;
BEGIN
	IF delivery_id IS NULL THEN
		RAISE EXCEPTION 'delivery_id must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the id of a row of notifier.deliveries.';
	END IF;
	SELECT d.status INTO current_status FROM notifier.deliveries d
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
	UPDATE notifier.deliveries
	   SET status = 'pending', attempts = 0, next_attempt_at = now(),
		   updated_at = now()
	 WHERE id = delivery_id;
	PERFORM pg_notify('pg_notifier_control', 'deliveries');
END
$$;

CREATE FUNCTION notifier.redeliver_dead(route_id bigint)
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
					WHERE r.id = redeliver_dead.route_id AND r.kind = 'webhook') THEN
		RAISE EXCEPTION 'webhook route % does not exist', route_id
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

-- Managing routes needs superuser or an explicit GRANT EXECUTE.
REVOKE ALL ON FUNCTION notifier.add_queue(text, regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.remove_route(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.redeliver(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.redeliver_dead(bigint) FROM PUBLIC;

-- The routes, secrets masked.
CREATE VIEW notifier.route_list AS
SELECT r.id,
	   r.channel,
	   r.kind,
	   coalesce(r.queue_table::text, r.url) AS target,
	   r.headers,
	   CASE WHEN r.secret IS NOT NULL THEN '********' END AS secret,
	   r.batch_size,
	   r.max_attempts,
	   r.timeout_ms,
	   r.concurrency,
	   r.ordered,
	   r.created_at
  FROM notifier.routes r;
REVOKE ALL ON notifier.route_list FROM PUBLIC;
GRANT SELECT ON notifier.route_list TO pg_monitor;

-- Take (and remove) the oldest events of notifier.queue; concurrent callers
-- never get the same event.
CREATE FUNCTION notifier.pop(channel text DEFAULT NULL, max integer DEFAULT 100)
RETURNS SETOF notifier.queue
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF max IS NULL OR max < 1 THEN
		RAISE EXCEPTION 'max must be a positive number of events, not %',
			coalesce(max::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'notifier.pop(channel, max) returns at most max events.';
	END IF;
	IF channel IS NULL THEN
		RETURN QUERY
		WITH taken AS (
			DELETE FROM notifier.queue q
			 WHERE q.id = ANY (ARRAY(SELECT s.id FROM notifier.queue s
									  ORDER BY s.id LIMIT max
										FOR UPDATE SKIP LOCKED))
			RETURNING q.*)
		SELECT * FROM taken ORDER BY id;
	ELSE
		RETURN QUERY
		WITH taken AS (
			DELETE FROM notifier.queue q
			 WHERE q.id = ANY (ARRAY(SELECT s.id FROM notifier.queue s
									  WHERE s.channel = pop.channel
									  ORDER BY s.id LIMIT max
										FOR UPDATE SKIP LOCKED))
			RETURNING q.*)
		SELECT * FROM taken ORDER BY id;
	END IF;
END
$$;

COMMENT ON FUNCTION notifier.pop(text, integer) IS
'remove and return the oldest events of notifier.queue (of one channel, or all)';

--
-- Status, from shared memory (needs shared_preload_libraries).
--
CREATE FUNCTION notifier.status(
	OUT database name,
	OUT pid integer,
	OUT state text,
	OUT started_at timestamptz,
	OUT channels text[],
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT queue_usage double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'notifier_status'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION notifier.status() IS
'one row per database in pg_notifier.databases: its worker and the NOTIFY queue usage';

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
	OUT latency_p99_ms double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'notifier_route_stats'
LANGUAGE C STRICT VOLATILE;

CREATE VIEW notifier.stats AS
SELECT r.id AS route_id,
	   r.channel,
	   r.kind,
	   coalesce(r.queue_table::text, r.url) AS target,
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
	   pg_catalog.pg_notification_queue_usage() AS queue_usage
  FROM notifier.routes r
  LEFT JOIN notifier.route_stats() s ON s.route_id = r.id
  LEFT JOIN notifier.status() w ON w.database = pg_catalog.current_database()
  LEFT JOIN LATERAL (
	SELECT count(*) FILTER (WHERE x.status = 'pending') AS pending,
		   count(*) FILTER (WHERE x.status = 'in_flight') AS in_flight
	  FROM notifier.deliveries x
	 WHERE x.route_id = r.id AND x.status IN ('pending', 'in_flight')
	   AND r.kind = 'webhook') d ON true
  LEFT JOIN LATERAL (
	SELECT count(*) AS events,
		   pg_catalog.now() - min(o.created_at) AS oldest_age
	  FROM notifier.outbox o
	 WHERE o.channel = r.channel) ob ON true;

-- What waits in the outbox, per channel (with or without a route).
CREATE VIEW notifier.outbox_stats AS
SELECT o.channel,
	   count(*) AS events,
	   min(o.created_at) AS oldest,
	   pg_catalog.now() - min(o.created_at) AS oldest_age,
	   EXISTS (SELECT 1 FROM notifier.routes r WHERE r.channel = o.channel) AS routed
  FROM notifier.outbox o
 GROUP BY o.channel;

REVOKE ALL ON FUNCTION notifier.status() FROM PUBLIC;
REVOKE ALL ON FUNCTION notifier.route_stats() FROM PUBLIC;
REVOKE ALL ON notifier.stats FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notifier.status() TO pg_monitor;
GRANT EXECUTE ON FUNCTION notifier.route_stats() TO pg_monitor;
GRANT SELECT ON notifier.stats TO pg_monitor;
REVOKE ALL ON notifier.outbox_stats FROM PUBLIC;
GRANT SELECT ON notifier.outbox_stats TO pg_monitor;

-- A worker waiting for this extension starts at once.
SELECT pg_catalog.pg_notify('pg_notifier_control', 'installed');
