/*-------------------------------------------------------------------------
 *
 * routes.c
 *	  Routes: the rows of notifier.routes, managed by add_queue() and
 *	  remove_route(), and loaded by the worker.
 *
 * Any change of notifier.routes NOTIFYs the control channel (a statement
 * trigger of the install script); the worker then reloads the table and
 * LISTENs/UNLISTENs as needed.  Managing routes needs EXECUTE on these
 * functions (superuser, or an explicit grant); they write to the table as
 * its owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "common/extension.h"
#include "worker/sinks/queue_sink.h"
#include "worker/routes.h"
#include "worker/sinks/webhook_sign.h"

static int
compare_strings(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

static List *
text_array_to_strings(Datum array)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			result = lappend(result, TextDatumGetCString(elems[i]));
	return result;
}

/*
 * Read notifier.routes.  In a transaction with a snapshot, connected to SPI.
 */
RouteTable *
routes_load(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "pg_notifier routes",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	RouteTable *table;
	HASHCTL		ctl;
	uint64		n;

	if (SPI_execute("SELECT id, channel, kind, queue_table::pg_catalog.oid, url,"
					" ARRAY(SELECT h.key || ': ' || h.value"
					"        FROM pg_catalog.jsonb_each_text(headers) h ORDER BY h.key),"
					" secret, batch_size, max_attempts, timeout_ms, concurrency, ordered"
					" FROM notifier.routes ORDER BY id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.routes failed");
	n = SPI_processed;

	old = MemoryContextSwitchTo(cxt);
	table = palloc0(sizeof(RouteTable));
	table->cxt = cxt;
	table->routes = palloc0(Max(n, 1) * sizeof(Route));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(ChannelRoutes);
	ctl.hcxt = cxt;
	table->by_channel = hash_create("pg_notifier routes by channel",
									Max(n, 8), &ctl,
#if PG_VERSION_NUM >= 140000
									HASH_ELEM | HASH_STRINGS | HASH_CONTEXT
#else
									HASH_ELEM | HASH_CONTEXT
#endif
		);

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		Route	   *route = &table->routes[table->nroutes];
		char	   *kind = SPI_getvalue(tuple, tupdesc, 3);
		ChannelRoutes *entry;
		bool		isnull;
		bool		found;

		route->id = DatumGetInt64(SPI_getbinval(tuple, tupdesc, 1, &isnull));
		route->channel = SPI_getvalue(tuple, tupdesc, 2);
		route->cxt = cxt;
		if (strcmp(kind, "queue") == 0)
		{
			route->kind = ROUTE_QUEUE;
			route->queue_table = DatumGetObjectId(SPI_getbinval(tuple, tupdesc, 4, &isnull));
		}
		else if (strcmp(kind, "webhook") == 0)
		{
			WebhookConfig *wh = &route->webhook;
			char	   *secret = SPI_getvalue(tuple, tupdesc, 7);

			route->kind = ROUTE_WEBHOOK;
			wh->url = SPI_getvalue(tuple, tupdesc, 5);
			wh->headers = text_array_to_strings(SPI_getbinval(tuple, tupdesc, 6, &isnull));
			if (secret != NULL)
				wh->key = webhook_secret_key(secret, &wh->keylen);
			wh->batch_size = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 8, &isnull));
			wh->max_attempts = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 9, &isnull));
			wh->timeout_ms = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 10, &isnull));
			wh->concurrency = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 11, &isnull));
			wh->ordered = DatumGetBool(SPI_getbinval(tuple, tupdesc, 12, &isnull));
		}
		else
		{
			ereport(WARNING,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("pg_notifier: route " INT64_FORMAT " has unknown kind \"%s\"; skipped",
							route->id, kind)));
			continue;
		}
		if (strlen(route->channel) >= NAMEDATALEN)
			continue;			/* no NOTIFY can have such a channel */
		table->nroutes++;

		entry = hash_search(table->by_channel, route->channel, HASH_ENTER, &found);
		if (!found)
		{
			entry->nroutes = 0;
			entry->routes = palloc(n * sizeof(Route *));
			table->channels = lappend(table->channels, entry->channel);
		}
		entry->routes[entry->nroutes++] = route;
	}
	list_sort(table->channels, compare_strings);
	MemoryContextSwitchTo(old);
	return table;
}

/* Connected to SPI or not: the sinks' plans are freed, not run. */
void
routes_free(RouteTable *table)
{
	if (table == NULL)
		return;
	for (int i = 0; i < table->nroutes; i++)
	{
		switch (table->routes[i].kind)
		{
			case ROUTE_QUEUE:
				queue_sink_free(&table->routes[i]);
				break;
			case ROUTE_WEBHOOK:
				break;			/* its plan is shared and kept */
		}
	}
	MemoryContextDelete(table->cxt);
}

ChannelRoutes *
routes_for_channel(RouteTable *table, const char *channel)
{
	if (table == NULL || strlen(channel) >= NAMEDATALEN)
		return NULL;
	return hash_search(table->by_channel, channel, HASH_FIND, NULL);
}

Route *
routes_find(RouteTable *table, int64 route_id)
{
	for (int i = 0; table != NULL && i < table->nroutes; i++)
		if (table->routes[i].id == route_id)
			return &table->routes[i];
	return NULL;
}

void
check_channel_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *channel;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("channel must not be NULL"),
				 errhint("Pass the channel whose events the route receives, as given to notifier.watch().")));
	channel = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (channel[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel must not be empty")));
	if (strlen(channel) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel name \"%s\" is too long", channel),
				 errdetail("NOTIFY channel names are shorter than %d bytes.", NAMEDATALEN)));
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

/*
 * notifier.add_queue(channel text, queue_table regclass) -> route id
 */
Datum
notifier_add_queue(PG_FUNCTION_ARGS)
{
	Oid			relid;
	QueueColumns columns;
	Oid			argtypes[2] = {TEXTOID, OIDOID};
	Datum		values[2];
	int64		id = 0;

	check_channel_arg(fcinfo, 0);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_table must not be NULL"),
				 errhint("Omit it for notifier.queue, or name a table with compatible columns.")));
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
	routes_execute("INSERT INTO notifier.routes (channel, kind, queue_table)"
				   " VALUES ($1, 'queue', $2::pg_catalog.regclass) RETURNING id",
				   2, argtypes, values, NULL, SPI_OK_INSERT_RETURNING, &id);
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

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("route id must not be NULL"),
				 errhint("See notifier.route_list for the routes.")));
	values[0] = PG_GETARG_DATUM(0);
	if (routes_execute("WITH gone AS (DELETE FROM notifier.routes WHERE id = $1 RETURNING id),"
					   " deliveries AS (DELETE FROM notifier.deliveries d USING gone"
					   "  WHERE d.route_id = gone.id)"
					   " SELECT id FROM gone",
					   1, argtypes, values, NULL, SPI_OK_SELECT, NULL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("route " INT64_FORMAT " does not exist", PG_GETARG_INT64(0)),
				 errhint("See notifier.route_list for the routes.")));
	PG_RETURN_VOID();
}
