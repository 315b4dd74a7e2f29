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

-- The same columns as in 0.1: CREATE OR REPLACE keeps the grants.
CREATE OR REPLACE VIEW notifier.route_list AS
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
	   r.created_at
  FROM notifier.routes r;

CREATE OR REPLACE VIEW notifier.stats AS
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
