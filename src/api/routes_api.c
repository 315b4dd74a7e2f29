/*-------------------------------------------------------------------------
 *
 * routes_api.c
 *	  notifier.add_queue() and notifier.remove_route(), and what every
 *	  function that manages routes shares: the channel argument, and
 *	  writing notifier.routes as its owner.
 *
 * Any change of notifier.routes NOTIFYs the control channel (a statement
 * trigger of the install script); the worker then reloads the table.
 * Managing routes needs EXECUTE on these functions (superuser, or an
 * explicit grant); they write to the table as its owner.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"

#include "api/queue_api.h"
#include "api/route_options.h"
#include "api/routes_api.h"
#include "common/channel.h"
#include "common/database_list.h"
#include "common/extension.h"
#include "common/owner_switch.h"
#include "common/queue_table.h"
#include "common/shmem.h"
#include "pg_notifier.h"
#include "common/sqlutil.h"

PG_FUNCTION_INFO_V1(notifier_routes_changed);

/*
 * notifier.routes_changed(): statement trigger on notifier.routes.  At
 * commit the worker hears of it on the control channel and loads the
 * routes again, and every backend forgets which channels are routed (a
 * relcache invalidation of notifier.routes: capture/routed_channels.c).
 * Not when the worker writes its own bookkeeping (failing_since): nothing
 * that anyone loads has changed.
 */
Datum
notifier_routes_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notifier.routes_changed() was not called by the trigger manager")));
	if (notifier_routes_quiet)
		return PointerGetDatum(NULL);	/* the worker's bookkeeping */
	Async_Notify(NOTIFIER_CONTROL_CHANNEL, "routes");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * A route in a database no worker serves would never receive anything:
 * say so, with what to change.
 */
void
warn_if_no_worker(void)
{
	char	   *dbname = get_database_name(MyDatabaseId);

	if (!shmem_available())
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no pg_notifier worker can deliver the events of this route"),
				 errdetail("pg_notifier is not loaded through shared_preload_libraries."),
				 errhint("Add pg_notifier to shared_preload_libraries and restart the server.")));
	else if (!database_has_worker(dbname))
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no pg_notifier worker can deliver the events of this route"),
				 errdetail("Database \"%s\" is not in pg_notifier.databases.", dbname),
				 errhint("Set pg_notifier.databases to '*', or add the database to it, and reload the configuration.")));
}

/* The channel argument of a route function: what NOTIFY accepts. */
void
check_channel_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *channel;

	require_arg(fcinfo, argno, "channel",
				"Pass the channel whose events the route receives, as given to notifier.watch().");
	channel = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	check_channel_name(channel, NULL);
}

/* The error of a function given the id of no route. */
void
route_does_not_exist(int64 route_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("route " INT64_FORMAT " does not exist", route_id),
			 errhint("See notifier.route_list for the routes.")));
}

/*
 * Run one statement on notifier.routes (and notifier.deliveries) as its
 * owner; returns SPI_processed, and the first column of the first row
 * returned in *returned_id.
 */
uint64
routes_execute(const char *sql, int nargs, Oid *argtypes, Datum *values,
			   const char *nulls, int expected_rc, int64 *returned_id)
{
	OwnerSwitch sw;
	uint64		processed;
	int			rc;

	become_table_owner("routes", &sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0);
	if (rc != expected_rc)
		elog(ERROR, "updating notifier.routes failed: %s", SPI_result_code_string(rc));
	processed = SPI_processed;
	if (returned_id != NULL && processed == 1)
	{
		bool		isnull;

		*returned_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	restore_user(&sw);
	return processed;
}

PG_FUNCTION_INFO_V1(notifier_add_queue);

/* the arguments of notifier.add_queue() after channel and queue_table */
#define ADD_QUEUE_ARG_FILTER 2
#define ADD_QUEUE_ARG_TRANSFORM 3
#define ADD_QUEUE_ARG_MAX_READS 4

/*
 * notifier.add_queue(channel text, queue_table regclass, filter jsonpath,
 *					  transform regprocedure, max_reads integer) -> route id
 *
 * 0.1's definition (channel, queue_table), which an install runs before its
 * update to 0.2, calls this too: the columns of the other arguments are
 * added to the INSERT when the call has them.
 */
Datum
notifier_add_queue(PG_FUNCTION_ARGS)
{
	Oid			relid;
	QueueColumns columns;
	Oid			argtypes[2 + ROUTE_OPTION_COUNT + 1] = {TEXTOID, OIDOID, ROUTE_OPTION_TYPES, INT4OID};
	Datum		values[2 + ROUTE_OPTION_COUNT + 1];
	char		nulls[2 + ROUTE_OPTION_COUNT + 1] = {' ', ' '};
	int			noptions;
	const char *option_columns;
	const char *option_params;
	const char *max_reads_column = "";
	const char *max_reads_param = "";
	int64		id = 0;

	check_channel_arg(fcinfo, 0);
	require_arg(fcinfo, 1, "queue_table",
				"Omit it for notifier.queue, or name a table with compatible columns.");
	relid = PG_GETARG_OID(1);
	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with oid %u does not exist", relid)));

	queue_table_check(relid, &columns);
	if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to route events into table \"%s\"",
						get_rel_name(relid)),
				 errhint("Adding a queue route needs INSERT privilege on its queue table.")));

	values[0] = PG_GETARG_DATUM(0);
	values[1] = ObjectIdGetDatum(relid);
	noptions = route_options_args(fcinfo, ADD_QUEUE_ARG_FILTER, ADD_QUEUE_ARG_TRANSFORM,
								  values + 2, nulls + 2, 3, &option_columns, &option_params);
	queue_max_reads_arg(fcinfo, ADD_QUEUE_ARG_MAX_READS, relid,
						&values[2 + noptions], &nulls[2 + noptions]);
	if (nulls[2 + noptions] != 'n')
	{
		argtypes[2 + noptions] = INT4OID;
		max_reads_column = ", max_reads";
		max_reads_param = psprintf(", $%d", 2 + noptions + 1);
		noptions++;
	}
	warn_if_no_worker();
	routes_execute(psprintf("INSERT INTO notifier.routes (channel, kind, queue_table%s%s)"
							" VALUES ($1, 'queue', $2::pg_catalog.regclass%s%s) RETURNING id",
							option_columns, max_reads_column, option_params, max_reads_param),
				   2 + noptions, argtypes, values, nulls,
				   SPI_OK_INSERT_RETURNING, &id);
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(notifier_remove_route);

/*
 * notifier.remove_route(id bigint)
 */
Datum
notifier_remove_route(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];

	require_arg(fcinfo, 0, "route id", "See notifier.route_list for the routes.");
	values[0] = PG_GETARG_DATUM(0);
	if (routes_execute("WITH gone AS (DELETE FROM notifier.routes"
					   "  WHERE id OPERATOR(pg_catalog.=) $1 RETURNING id),"
					   " deliveries AS (DELETE FROM notifier.deliveries d USING gone"
					   "  WHERE d.route_id OPERATOR(pg_catalog.=) gone.id)"
					   " SELECT id FROM gone",
					   1, argtypes, values, NULL, SPI_OK_SELECT, NULL) == 0)
		route_does_not_exist(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}
