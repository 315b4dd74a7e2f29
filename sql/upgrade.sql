--
-- ALTER EXTENSION pg_notifier UPDATE from 0.1 gives the objects of a fresh
-- install, and keeps the data.  Runs last: it drops and recreates the
-- extension.
--
SET client_min_messages = warning;
DROP EXTENSION pg_notifier CASCADE;
CREATE EXTENSION pg_notifier VERSION '0.1';
RESET client_min_messages;

-- data of every kind the extension keeps
CREATE TABLE upg (id int PRIMARY KEY, v text);
SELECT notifier.watch('upg', delivery => 'outbox');
INSERT INTO upg VALUES (1, 'kept');
-- a trigger as 0.1's watch() made it, excluding by name: the update warns
CREATE TRIGGER notifier_upg_ex AFTER INSERT ON upg FOR EACH ROW
	EXECUTE FUNCTION notifier.notify_change('channel=upg_ex', 'exclude=v');
SELECT notifier.add_queue('upg_q') > 0 AS queue_route;
SELECT notifier.add_webhook('upg_w', 'http://127.0.0.1:9/', secret => 'whsec_c2VjcmV0') > 0 AS webhook_route;
SET client_min_messages = error;
SELECT notifier.add_webhook('upg_o', 'http://127.0.0.1:9/', ordered => true) > 0 AS ordered_route;
RESET client_min_messages;
-- grants of objects the update makes again are kept
CREATE ROLE upg_manager;
GRANT EXECUTE ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, boolean)
	TO upg_manager;
GRANT SELECT ON notifier.route_list TO upg_manager;
-- (route filter and transform: add_queue(), route_stats() and notifier.stats
-- are made again; alter_route() gets the grants of remove_route())
GRANT EXECUTE ON FUNCTION notifier.add_queue(text, regclass), notifier.remove_route(bigint),
	notifier.route_stats() TO upg_manager;
GRANT SELECT ON notifier.stats TO upg_manager;
INSERT INTO notifier.queue (channel, payload) VALUES ('upg_q', '{"a":1}');
INSERT INTO notifier.payloads (event) VALUES ('{"big":true}');

-- the extension's objects, described so that two installs can be compared
CREATE FUNCTION ext_objects() RETURNS TABLE (object text, definition text)
LANGUAGE sql AS $$
	SELECT pg_describe_object(d.classid, d.objid, 0),
		   CASE d.classid
			 WHEN 'pg_proc'::regclass THEN pg_get_functiondef(d.objid)
			 WHEN 'pg_class'::regclass THEN
			   coalesce(pg_get_viewdef(d.objid),
						(SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
										   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
										   || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
										   ', ' ORDER BY a.attnum)
						   FROM pg_attribute a
						   LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
						  WHERE a.attrelid = d.objid AND a.attnum > 0 AND NOT a.attisdropped)
						|| coalesce(' ' || array_to_string(c.reloptions, ','), '')
						|| coalesce(' acl ' || c.relacl::text, ''))
			 ELSE NULL
		   END
	  FROM pg_depend d
	  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
	 WHERE d.refclassid = 'pg_extension'::regclass
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_notifier')
	   AND d.deptype = 'e'
	UNION ALL
	SELECT 'constraint ' || conname || ' on ' || conrelid::regclass, pg_get_constraintdef(oid)
	  FROM pg_constraint WHERE connamespace = 'notifier'::regnamespace
	UNION ALL
	SELECT 'index ' || indexrelid::regclass, pg_get_indexdef(indexrelid)
	  FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class
									   WHERE relnamespace = 'notifier'::regnamespace)
	UNION ALL
	SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass, pg_get_triggerdef(oid)
	  FROM pg_trigger WHERE NOT tgisinternal
	   AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'notifier'::regnamespace)
	UNION ALL
	SELECT 'function acl ' || oid::regprocedure, proacl::text
	  FROM pg_proc WHERE pronamespace = 'notifier'::regnamespace
$$;

ALTER EXTENSION pg_notifier UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pg_notifier';
SELECT channel, ordered FROM notifier.routes ORDER BY id;
SELECT has_function_privilege('upg_manager',
		'notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)',
		'EXECUTE') AS add_webhook_granted,
	   has_table_privilege('upg_manager', 'notifier.route_list', 'SELECT') AS route_list_granted;
REVOKE EXECUTE ON FUNCTION notifier.add_webhook(text, text, jsonb, text, integer, integer, integer, integer, notifier.ordering, jsonpath, regprocedure, double precision, interval)
	FROM upg_manager;
REVOKE SELECT ON notifier.route_list FROM upg_manager;
SELECT has_function_privilege('upg_manager', 'notifier.add_queue(text, regclass, jsonpath, regprocedure, integer)',
		'EXECUTE') AS add_queue_granted,
	   has_function_privilege('upg_manager', 'notifier.alter_route(bigint, jsonpath, regprocedure, text[])',
		'EXECUTE') AS alter_route_granted,
	   has_function_privilege('upg_manager', 'notifier.route_stats()', 'EXECUTE') AS route_stats_granted,
	   has_table_privilege('upg_manager', 'notifier.stats', 'SELECT') AS stats_granted,
	   has_table_privilege('pg_monitor', 'notifier.stats', 'SELECT') AS stats_monitor;
REVOKE ALL ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer),
	notifier.alter_route(bigint, jsonpath, regprocedure, text[]), notifier.remove_route(bigint),
	notifier.route_stats() FROM upg_manager;
REVOKE SELECT ON notifier.stats FROM upg_manager;
DROP ROLE upg_manager;
CREATE TEMP TABLE upgraded AS SELECT * FROM ext_objects();

-- the data is still there
SELECT count(*) AS upg_outbox FROM notifier.outbox WHERE channel = 'upg';
SELECT channel, kind, secret IS NOT NULL AS has_secret FROM notifier.routes ORDER BY id;
SELECT channel, payload FROM notifier.queue WHERE channel = 'upg_q';
SELECT event::text FROM notifier.payloads WHERE event::text = '{"big":true}';
SELECT "table", channel, delivery FROM notifier.watches WHERE "table" = 'upg'::regclass ORDER BY channel;

-- a fresh install of the default version has the same objects
SET client_min_messages = warning;
DROP EXTENSION pg_notifier CASCADE;
RESET client_min_messages;
CREATE EXTENSION pg_notifier;
CREATE TEMP TABLE fresh AS SELECT * FROM ext_objects();
SELECT count(*) > 50 AS many_objects FROM fresh;
(SELECT 'only after upgrade' AS side, * FROM upgraded EXCEPT SELECT 'only after upgrade', * FROM fresh)
UNION ALL
(SELECT 'only in fresh install', * FROM fresh EXCEPT SELECT 'only in fresh install', * FROM upgraded)
ORDER BY 1, 2;

DROP TABLE upg;
DROP FUNCTION ext_objects();
