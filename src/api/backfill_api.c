/*-------------------------------------------------------------------------
 *
 * backfill_api.c
 *	  notifier.backfill(): ask the worker to send one READ event per
 *	  existing row of a watched table to the routes of its channel.
 *
 * Everything is checked here, in the caller's transaction, so that a
 * backfill the worker takes up can only fail for what changed since:
 *
 *	- the caller may read the table (SELECT on it): the rows are sent with
 *	  the caller's rights -- the worker runs the read as the caller, row
 *	  security included.  EXECUTE on backfill() itself is granted to no
 *	  one by default: sending events to routes is managing routes;
 *	- the table is watched on the channel (by default: its only watch),
 *	  through the outbox ('auto' or 'outbox'): the order of a READ event
 *	  and the events of concurrent changes rests on outbox ids (see
 *	  worker/backfill.c); a 'notify' watch cannot give it;
 *	- the channel has a route: otherwise nothing would receive the events;
 *	- the table has a key (primary key or replica identity) of ordered
 *	  types: the worker pages through it in key order;
 *	- "where" is one expression (as a watch's condition is), and the two
 *	  queries of a batch, "where" included, are prepared here as the caller
 *	  with the worker's search_path (pg_catalog, pg_temp): an unknown
 *	  column, an expression that is not boolean, an unqualified function of
 *	  another schema are errors now, not in the worker.
 *
 * The backfill is a row of notifier.backfill_jobs (written as its owner),
 * the worker is told on the control channel at commit.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "api/watch_api.h"
#include "capture/routed_channels.h"
#include "capture/watch_cache.h"
#include "common/backfill_query.h"
#include "common/owner_switch.h"
#include "common/sqlutil.h"
#include "pg_notifier.h"

/* the longest "where" an error shows whole, with the error's position */
#define WHERE_ECHO_BYTES 1024

/* the row trigger of the watch to backfill by (channel NULL: the only one) */
static Trigger *
backfill_watch(Relation rel, const char *channel)
{
	List	   *triggers = notify_change_triggers(rel, true);
	Trigger    *tg;

	if (channel != NULL)
	{
		tg = watch_trigger_of_channel(rel, channel);
		if (tg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("table \"%s\" is not watched on channel \"%s\"",
							RelationGetRelationName(rel), clip_for_message(channel)),
					 errdetail("A backfill sends the rows as the watch of the table and channel sends its events."),
					 errhint("Call notifier.watch() first; SELECT * FROM notifier.watches lists the watches.")));
		return tg;
	}
	if (triggers == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not watched", RelationGetRelationName(rel)),
				 errdetail("A backfill sends the rows as the watch of the table and channel sends its events."),
				 errhint("Call notifier.watch() first.")));
	if (list_length(triggers) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_PARAMETER),
				 errmsg("table \"%s\" is watched on %d channels",
						RelationGetRelationName(rel), list_length(triggers)),
				 errhint("Name the channel: notifier.backfill(table, channel).  SELECT * FROM notifier.watches lists them.")));
	return linitial(triggers);
}

/*
 * Prepare the queries of a batch as the caller, with the worker's
 * search_path, in a GUC nest level of their own.  An error names "where"
 * as its context; the query (which holds "where") only when short.
 */
static void
check_queries(const BackfillScan *scan, const char *where)
{
	const char *queries[2];
	int			nestlevel = NewGUCNestLevel();
	MemoryContext cxt = CurrentMemoryContext;

	queries[0] = backfill_lock_sql(scan, true);
	queries[1] = backfill_read_sql(scan, where, true);
	(void) set_config_option("search_path", NOTIFIER_SAFE_SEARCH_PATH, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int i = 0; i < 2; i++)
	{
		PG_TRY();
		{
			if (SPI_prepare(queries[i], backfill_nparams(scan),
							backfill_param_types(scan)) == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		}
		PG_CATCH();
		{
			rethrow_in_context(cxt, where != NULL ? "pg_notifier backfill \"where\"" :
							   "pg_notifier backfill",
							   strlen(queries[i]) > WHERE_ECHO_BYTES);
		}
		PG_END_TRY();
	}
	SPI_finish();
	AtEOXact_GUC(false, nestlevel);
}

/*
 * The table's reltuples (of its partitions, for a partitioned table); false
 * when none was ever counted (never vacuumed or analyzed).
 */
static bool
estimate_rows(Oid relid, int64 *estimate)
{
	static const Oid argtypes[] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};
	bool		isnull = true;
	OwnerSwitch sw;

	/* pg_class and pg_partition_tree() are PUBLIC's, whoever reads them */
	become_table_owner("backfill_jobs", &sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT pg_catalog.sum(c.reltuples)"
							  " FILTER (WHERE c.reltuples OPERATOR(pg_catalog.>=) 0)::pg_catalog.int8"
							  " FROM pg_catalog.pg_class c"
							  " WHERE c.relkind OPERATOR(pg_catalog.=) 'r'"
							  " AND (c.oid OPERATOR(pg_catalog.=) $1 OR c.oid IN"
							  " (SELECT p.relid FROM pg_catalog.pg_partition_tree($1) p))",
							  1, (Oid *) argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "estimating the rows of a backfill failed");
	if (SPI_processed == 1)
		*estimate = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	restore_user(&sw);
	return !isnull;
}

/* the row of notifier.backfill_jobs; returns its id */
static int64
insert_job(Oid relid, const char *channel, const char *where, int batch_size,
		   bool estimated, int64 estimate)
{
	static const Oid argtypes[] = {OIDOID, TEXTOID, OIDOID, TEXTOID, INT4OID, INT8OID};
	Datum		args[6];
	char		nulls[6] = "      ";
	bool		isnull;
	int64		id;
	OwnerSwitch sw;

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(channel);
	args[2] = ObjectIdGetDatum(GetUserId());
	args[3] = where ? CStringGetTextDatum(where) : (Datum) 0;
	nulls[3] = where ? ' ' : 'n';
	args[4] = Int32GetDatum(batch_size);
	args[5] = Int64GetDatum(estimate);
	nulls[5] = estimated ? ' ' : 'n';

	become_table_owner("backfill_jobs", &sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("INSERT INTO notifier.backfill_jobs"
							  " (relid, channel, role, \"where\", batch_size, rows_estimated)"
							  " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
							  6, (Oid *) argtypes, args, nulls, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "inserting into notifier.backfill_jobs failed");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	restore_user(&sw);
	return id;
}

PG_FUNCTION_INFO_V1(notifier_backfill);

/*
 * notifier.backfill(relation regclass, channel text, "where" text,
 *					 batch_size int) -> bigint, the backfill's id
 */
Datum
notifier_backfill(PG_FUNCTION_ARGS)
{
	Oid			relid;
	const char *channel = NULL;
	const char *where = NULL;
	int			batch_size;
	Relation	rel;
	Watch	   *w;
	BackfillScan scan;
	int64		estimate = 0;
	bool		estimated;
	int64		id;

	require_arg(fcinfo, 0, "relation", "Pass the table to backfill, for example 'public.orders'.");
	require_arg(fcinfo, 3, "batch_size", "Leave batch_size out for the default of 1000 rows per transaction.");
	relid = PG_GETARG_OID(0);
	if (!PG_ARGISNULL(1))
		channel = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
		where = text_to_cstring(PG_GETARG_TEXT_PP(2));
	batch_size = PG_GETARG_INT32(3);
	if (batch_size < 1 || batch_size > BACKFILL_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and %d", BACKFILL_MAX_BATCH),
				 errdetail("It is the number of rows read and sent per transaction.")));

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid),
				 errhint("Name the table, for example 'public.orders'; it may have been dropped.")));
	require_table(rel, "Only tables and partitioned tables are watched, and so backfilled.");
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to backfill table \"%s\"", RelationGetRelationName(rel)),
				 errhint("A backfill sends the table's rows with your rights: it needs the SELECT privilege on the table.")));

	w = watch_lookup_trigger(rel, backfill_watch(rel, channel));
	channel = w->opts.channel;
	if (w->opts.delivery == DELIVERY_NOTIFY)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot backfill table \"%s\" on channel \"%s\"",
						RelationGetRelationName(rel), clip_for_message(channel)),
				 errdetail("Its watch delivers with NOTIFY only (delivery => 'notify').  A backfill writes its events to the outbox and orders them with concurrent changes by outbox id."),
				 errhint("Watch the table with delivery => 'auto' (the default) or 'outbox'.")));
	if (!channel_is_routed(channel))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("channel \"%s\" has no route", clip_for_message(channel)),
				 errdetail("A backfill sends its events to the routes of the channel, not to LISTEN clients."),
				 errhint("Add a route first, with notifier.add_queue() or notifier.add_webhook().")));
	if (where != NULL &&
		!parses_as_one_expression(psprintf("SELECT (%s\n)", where),
								  "pg_notifier backfill \"where\""))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("pg_notifier backfill \"where\" is not a single expression: %s",
						clip_for_message(where)),
				 errhint("Write a boolean expression over the table's columns, such as status = 'paid'.")));

	backfill_scan_init(&scan, rel, w);
	check_queries(&scan, where);
	estimated = estimate_rows(relid, &estimate);
	id = insert_job(relid, channel, where, batch_size, estimated, estimate);
	relation_close(rel, AccessShareLock);

	/* the worker takes it up when this commits */
	Async_Notify(NOTIFIER_CONTROL_CHANNEL, "backfill");
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(notifier_cancel_backfill);

/*
 * notifier.cancel_backfill(backfill_id bigint) -> boolean: false when the
 * backfill had already finished.  Its row is locked first: the worker's
 * batch in progress commits before, or finds it cancelled.
 */
Datum
notifier_cancel_backfill(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[] = {INT8OID};
	Oid			caller = GetUserId();
	Datum		args[1];
	bool		isnull;
	Oid			role;
	char	   *state;
	bool		cancelled = false;
	OwnerSwitch sw;

	require_arg(fcinfo, 0, "backfill_id", "See notifier.backfills for the backfills.");
	args[0] = PG_GETARG_DATUM(0);

	become_table_owner("backfill_jobs", &sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT role, state FROM notifier.backfill_jobs"
							  " WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							  1, (Oid *) argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.backfill_jobs failed");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("backfill " INT64_FORMAT " does not exist", PG_GETARG_INT64(0)),
				 errhint("See notifier.backfills for the backfills.")));
	role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	if (!has_privs_of_role(caller, role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to cancel backfill " INT64_FORMAT, PG_GETARG_INT64(0)),
				 errhint("Only the role that started a backfill, the roles that have its privileges and superusers can cancel it.")));
	if (strcmp(state, "running") == 0)
	{
		if (SPI_execute_with_args("UPDATE notifier.backfill_jobs"
								  " SET state = 'cancelled', finished_at = pg_catalog.now()"
								  " WHERE id OPERATOR(pg_catalog.=) $1",
								  1, (Oid *) argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "updating notifier.backfill_jobs failed");
		cancelled = true;
	}
	SPI_finish();
	restore_user(&sw);
	PG_RETURN_BOOL(cancelled);
}
