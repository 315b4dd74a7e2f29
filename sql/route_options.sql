--
-- route_options: the filter (jsonpath) and transform (regprocedure) of
-- add_queue() and add_webhook(), alter_route(), and their errors.  What the
-- worker does with them is tested by test/integration/test_route_filter.py.
--
\set VERBOSITY default
SET client_min_messages = error;

CREATE FUNCTION ro_shape(e jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
AS $$ SELECT jsonb_build_object('id', e -> 'row' -> 'id', 'status', e -> 'row' -> 'status') $$;

-- filter and transform, on both kinds of route
SELECT notifier.add_queue('ro_orders', filter => '$.op == "UPDATE" && $.row.status == "paid"')
	AS q_route \gset
SELECT notifier.add_webhook('ro_orders', 'http://127.0.0.1:9/hook',
		filter => '$.row.total > 100', transform => 'ro_shape(jsonb)') AS w_route \gset
SELECT notifier.add_queue('ro_orders', 'notifier.queue', NULL, 'ro_shape(jsonb)') > 0 AS positional;
SELECT channel, kind, filter, transform, owner = current_user::regrole AS owner_is_caller
  FROM notifier.route_list ORDER BY id;

-- a jsonpath that does not parse, a transform of the wrong shape
SELECT notifier.add_queue('ro_bad', filter => '$.op ==');
SELECT notifier.add_queue('ro_bad', filter => 'not a path');
SELECT notifier.add_webhook('ro_bad', 'http://127.0.0.1:9/', transform => 'no_such_function(jsonb)');
SELECT notifier.add_queue('ro_bad', transform => 'pg_catalog.jsonb_typeof(jsonb)');
SELECT notifier.add_queue('ro_bad', transform => 'pg_catalog.jsonb_array_elements(jsonb)');
SELECT notifier.add_queue('ro_bad', transform => 'pg_catalog.jsonb_agg(anyelement)');
SELECT notifier.add_queue('ro_bad', transform => 'pg_catalog.jsonb_set(jsonb, text[], jsonb, boolean)');
SELECT notifier.add_queue('ro_bad', transform => 'pg_catalog.to_jsonb(anyelement)');
CREATE PROCEDURE ro_proc(e jsonb) LANGUAGE sql AS $$ SELECT 1 $$;
SELECT notifier.add_queue('ro_bad', transform => 'ro_proc(jsonb)');
SELECT count(*) AS routes_of_ro_bad FROM notifier.routes WHERE channel = 'ro_bad';

-- the caller needs EXECUTE on the transform: it runs as the caller
CREATE ROLE ro_manager;
GRANT EXECUTE ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer),
	notifier.alter_route(bigint, jsonpath, regprocedure, text[]) TO ro_manager;
GRANT INSERT ON notifier.queue TO ro_manager;
CREATE FUNCTION ro_private(e jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT e $$;
REVOKE EXECUTE ON FUNCTION ro_private(jsonb) FROM PUBLIC;
SET ROLE ro_manager;
SELECT notifier.add_queue('ro_priv', transform => 'ro_private(jsonb)');
SELECT notifier.add_queue('ro_priv', filter => '$.op == "INSERT"') AS priv_route \gset
SELECT notifier.alter_route(:priv_route, transform => 'ro_private(jsonb)');
SELECT notifier.alter_route(:priv_route, transform => 'ro_shape(jsonb)');
RESET ROLE;
SELECT filter, transform, owner FROM notifier.routes WHERE id = :priv_route;
-- a superuser setting the transform becomes the owner
SELECT notifier.alter_route(:priv_route, transform => 'ro_private(jsonb)');
SELECT filter, transform, owner = current_user::regrole AS owner_is_caller
  FROM notifier.routes WHERE id = :priv_route;
-- without EXECUTE on alter_route: no change
REVOKE ALL ON FUNCTION notifier.alter_route(bigint, jsonpath, regprocedure, text[]) FROM ro_manager;
SET ROLE ro_manager;
SELECT notifier.alter_route(:priv_route, reset => ARRAY['transform']);
RESET ROLE;

-- alter_route: set, reset, and its errors
SELECT notifier.alter_route(:q_route, filter => '$.op == "DELETE"');
SELECT filter, transform FROM notifier.routes WHERE id = :q_route;
SELECT notifier.alter_route(:q_route, transform => 'ro_shape(jsonb)');
SELECT filter, transform FROM notifier.routes WHERE id = :q_route;
SELECT notifier.alter_route(:q_route, reset => ARRAY['filter']);
SELECT filter, transform FROM notifier.routes WHERE id = :q_route;
SELECT notifier.alter_route(:q_route, filter => '$.op == "INSERT"', reset => ARRAY['transform']);
SELECT filter, transform FROM notifier.routes WHERE id = :q_route;
SELECT notifier.alter_route(:w_route, reset => ARRAY['filter', 'transform']);
SELECT filter, transform FROM notifier.routes WHERE id = :w_route;
SELECT notifier.alter_route(NULL, filter => '$.a');
SELECT notifier.alter_route(-1, filter => '$.a');
SELECT notifier.alter_route(:q_route);
SELECT notifier.alter_route(:q_route, reset => ARRAY[]::text[]);
SELECT notifier.alter_route(:q_route, filter => '$.a', reset => ARRAY['filter']);
SELECT notifier.alter_route(:q_route, reset => ARRAY['filter', NULL]);
SELECT notifier.alter_route(:q_route, reset => ARRAY['batch_size']);
SELECT notifier.alter_route(:q_route, reset => ARRAY[repeat('x', 200)]);
SELECT notifier.alter_route(-1, filter => '$ ? (');
SELECT notifier.alter_route(:q_route, transform => 'pg_catalog.jsonb_typeof(jsonb)');
SELECT filter, transform FROM notifier.routes WHERE id = :q_route;

-- notifier.stats has filtered
SELECT attname FROM pg_attribute
 WHERE attrelid = 'notifier.stats'::regclass AND attname = 'filtered';
SELECT has_table_privilege('pg_monitor', 'notifier.stats', 'SELECT') AS monitor_reads_stats,
	   has_function_privilege('pg_monitor', 'notifier.route_stats()', 'EXECUTE') AS monitor_runs_route_stats,
	   has_function_privilege('public', 'notifier.route_stats()', 'EXECUTE') AS public_runs_route_stats,
	   has_function_privilege('public', 'notifier.alter_route(bigint, jsonpath, regprocedure, text[])', 'EXECUTE') AS public_alters;

-- pg_upgrade refuses a cluster with columns of these types (their OIDs are
-- not kept): the transform is stored as its signature, as text
SELECT c.relname, a.attname, a.atttypid::regtype
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'notifier'::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0
   AND a.atttypid IN ('regcollation'::regtype, 'regconfig'::regtype, 'regdictionary'::regtype,
					  'regnamespace'::regtype, 'regoper'::regtype, 'regoperator'::regtype,
					  'regproc'::regtype, 'regprocedure'::regtype);

-- clean up
SELECT notifier.remove_route(id) FROM notifier.routes WHERE channel LIKE 'ro\_%';
REVOKE ALL ON FUNCTION notifier.add_queue(text, regclass, jsonpath, regprocedure, integer) FROM ro_manager;
REVOKE ALL ON notifier.queue FROM ro_manager;
DROP ROLE ro_manager;
DROP FUNCTION ro_shape(jsonb);
DROP FUNCTION ro_private(jsonb);
DROP PROCEDURE ro_proc(jsonb);
RESET client_min_messages;
