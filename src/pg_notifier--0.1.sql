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
	on_oversize text DEFAULT 'reference')
RETURNS text
AS 'MODULE_PATHNAME', 'notifier_watch'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION notifier.watch(regclass, text, text, text[], text[], text[], text, boolean, text, text) IS
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
	OUT on_oversize text)
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
	   array_agg(t.tgname::text ORDER BY t.tgname) AS triggers
  FROM pg_catalog.pg_trigger t,
	   LATERAL notifier.watch_options(t.oid) o
 WHERE t.tgfoid = 'notifier.notify_change()'::pg_catalog.regprocedure
   AND t.tgparentid = 0
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10;

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
	OUT noop_updates bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'notifier_capture_stats'
LANGUAGE C STRICT VOLATILE;
