/*-------------------------------------------------------------------------
 *
 * queue_api.c
 *	  notifier.read(): the events of a channel of notifier.queue, hidden
 *	  for a visibility timeout instead of deleted, and add_queue()'s
 *	  max_reads, the poison limit that read() applies.
 *
 * pop() deletes what it returns: a consumer with side effects must hold its
 * transaction open while it works, or lose the events if it dies after the
 * pop.  read() writes each event's vt (hidden until then) and read_ct
 * instead, in one statement over rows taken FOR UPDATE SKIP LOCKED: a
 * concurrent reader skips them while the statement's transaction runs, and
 * sees the new vt once it has committed.  ack() and nack() run their one
 * statement as the caller: they need only the caller's own rights.
 *
 * read() needs what its statement would need if the caller ran it (SELECT
 * and UPDATE on notifier.queue, as pop() needs SELECT and DELETE), checked
 * here; it then runs as the table's owner, because a queue route's
 * max_reads lives in notifier.routes and a poison event goes to
 * notifier.dead_letters, which no consumer may read or write.  An event
 * that has been read max_reads times and comes up again is moved there in
 * the same statement, with its reason, and is not returned.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "api/queue_api.h"
#include "common/channel.h"
#include "common/extension.h"
#include "common/owner_switch.h"
#include "common/sqlutil.h"

/*
 * The queue route of a channel into notifier.queue; with several, the one
 * of the smallest max_reads.
 */
#define QUEUE_ROUTE_SQL \
	"SELECT r.id, r.max_reads FROM notifier.routes r" \
	" WHERE r.channel OPERATOR(pg_catalog.=) $1" \
	"   AND r.kind OPERATOR(pg_catalog.=) 'queue'" \
	"   AND r.queue_table OPERATOR(pg_catalog.=) 'notifier.queue'::pg_catalog.regclass" \
	" ORDER BY r.max_reads NULLS LAST, r.id LIMIT 1"

/*
 * One statement: the oldest visible events, hidden for vt and returned.
 * With max_reads, the poison ones among them go to the route's dead
 * letters instead, in the same statement.  $1 channel, $2 vt, $3 max, $4
 * route id, $5 max_reads.  Without max_reads the statement has no
 * dead-letter part: read() is then as cheap as it can be.  The rows taken
 * are found again by "id = ANY (ARRAY(...))", not by a join: a kept plan is
 * generic, and a generic join of an unknown number of taken rows may well
 * be a hash join over the whole queue.  The channel's oldest rows come from
 * the (channel, id) index, in its order: the channel is compared as a range
 * (">= $1 AND <= $1", which for the database's deterministic collation is
 * equality) so that "ORDER BY s.channel, s.id" stays an order only that
 * index gives, sorts being ruled out (plan_for_indexes()).  With "= $1" the
 * order would be the id's alone, and the primary key, walked through the
 * rows of every other channel, would do as well for the planner.
 */
#define QUEUE_TAKEN_CTE(poison) \
	"WITH taken AS (" \
	"  SELECT s.id, " poison " AS poison" \
	"    FROM notifier.queue s" \
	"   WHERE s.channel OPERATOR(pg_catalog.>=) $1" \
	"     AND s.channel OPERATOR(pg_catalog.<=) $1" \
	"     AND (s.vt IS NULL OR s.vt OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())" \
	"   ORDER BY s.channel, s.id LIMIT $3 FOR UPDATE OF s SKIP LOCKED),"
#define QUEUE_DEAD_LETTER_CTES \
	" dead AS (" \
	"  DELETE FROM notifier.queue q" \
	"   WHERE q.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.id FROM taken t WHERE t.poison))" \
	"  RETURNING q.payload, q.read_ct)," \
	" dead_letter AS (" \
	"  INSERT INTO notifier.dead_letters (route_id, event_id, event, reason)" \
	"  SELECT $4, d.payload OPERATOR(pg_catalog.->>) 'id', d.payload::pg_catalog.text," \
	"         pg_catalog.format('read %s times without an ack (max_reads %s)', d.read_ct, $5)" \
	"    FROM dead d),"
#define QUEUE_HIDDEN_SELECT \
	" hidden AS (" \
	"  UPDATE notifier.queue q" \
	"     SET vt = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $2," \
	"         read_ct = q.read_ct OPERATOR(pg_catalog.+) 1" \
	"   WHERE q.id OPERATOR(pg_catalog.=)" \
	"         ANY (ARRAY(SELECT t.id FROM taken t WHERE t.poison IS NOT TRUE))" \
	"  RETURNING q.id, q.channel, q.payload, q.received_at, q.read_ct, q.vt)" \
	" SELECT * FROM hidden ORDER BY id"

#define QUEUE_READ_SQL \
	QUEUE_TAKEN_CTE("false") QUEUE_HIDDEN_SELECT
#define QUEUE_READ_POISON_SQL \
	QUEUE_TAKEN_CTE("s.read_ct OPERATOR(pg_catalog.>=) $5") \
	QUEUE_DEAD_LETTER_CTES QUEUE_HIDDEN_SELECT

/*
 * add_queue()'s max_reads: NULL (no limit), or a positive number, and only
 * for notifier.queue, the table read() reads.
 */
void
queue_max_reads_arg(FunctionCallInfo fcinfo, int argno, Oid queue_relid,
					Datum *value, char *null)
{
	int32		max_reads;

	/* a 0.1 definition of the function, before ALTER EXTENSION UPDATE */
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
	{
		*value = (Datum) 0;
		*null = 'n';
		return;
	}
	max_reads = PG_GETARG_INT32(argno);
	if (max_reads < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_reads must be a positive number of reads, not %d", max_reads),
				 errhint("Pass NULL for no limit.")));
	if (queue_relid != notifier_table_oid("queue"))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("max_reads applies only to the queue table \"notifier.queue\""),
				 errdetail("notifier.read() reads notifier.queue only; a custom queue table is consumed by its own SQL."),
				 errhint("Omit queue_table, or pass NULL as max_reads.")));
	*value = Int32GetDatum(max_reads);
	*null = ' ';
}

/*
 * The statements of read(), ack() and nack(), prepared once per backend
 * and planned for their indexes (plan_for_indexes()): the plan cache
 * re-plans them when the tables change, and notifier.queue's statistics
 * say little about the queue it holds by then.
 */
static SPIPlanPtr route_plan = NULL;
static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr read_poison_plan = NULL;
static SPIPlanPtr ack_plan = NULL;
static SPIPlanPtr nack_plan = NULL;

/* The caller's own right on notifier.queue, as if it ran the statement. */
static void
require_queue_privilege(Oid queue_relid, AclMode mode, const char *what)
{
	if (pg_class_aclcheck(queue_relid, GetUserId(), mode) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table \"notifier.queue\""),
				 errhint("notifier.read() needs %s on notifier.queue.", what)));
}

PG_FUNCTION_INFO_V1(notifier_read);

/*
 * notifier.read(channel text, vt interval, max integer)
 *	  -> TABLE (id, channel, payload, received_at, read_ct, vt)
 */
Datum
notifier_read(PG_FUNCTION_ARGS)
{
	Oid			queue_relid = notifier_table_oid("queue");
	Interval   *vt;
	Interval	zero;
	int32		max;
	Oid			argtypes[5] = {TEXTOID, INTERVALOID, INT4OID, INT8OID, INT4OID};
	Datum		values[5];
	bool		isnull;
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	OwnerSwitch sw;
	int			rc;
	uint64		i;

	require_arg(fcinfo, 0, "channel",
				"Pass the channel of a queue route into notifier.queue.");
	require_arg(fcinfo, 1, "vt",
				"Pass how long the events stay hidden, e.g. interval '30 seconds'.");
	require_arg(fcinfo, 2, "max",
				"notifier.read(channel, vt, max) returns at most max events.");
	check_channel_name(text_to_cstring(PG_GETARG_TEXT_PP(0)), NULL);
	vt = PG_GETARG_INTERVAL_P(1);
	memset(&zero, 0, sizeof(zero));
	if (!DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(vt),
										  IntervalPGetDatum(&zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("vt must be a positive interval"),
				 errhint("The events stay hidden for vt, until notifier.ack() or notifier.nack().")));
	max = PG_GETARG_INT32(2);
	if (max < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be a positive number of events, not %d", max),
				 errhint("notifier.read(channel, vt, max) returns at most max events.")));
	require_queue_privilege(queue_relid, ACL_SELECT, "SELECT and UPDATE");
	require_queue_privilege(queue_relid, ACL_UPDATE, "SELECT and UPDATE");

	tupdesc = materialize_srf(fcinfo, &store);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PointerGetDatum(vt);
	values[2] = Int32GetDatum(max);

	become_table_owner("queue", &sw);
	plan_for_indexes(GUC_ACTION_SAVE, true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(keep_plan(&route_plan, QUEUE_ROUTE_SQL, 1, argtypes),
						  values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.routes failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("channel \"%s\" has no queue route into notifier.queue",
						clip_for_message(text_to_cstring(PG_GETARG_TEXT_PP(0)))),
				 errhint("Add one with notifier.add_queue(channel); notifier.pop() still takes events left by a removed route.")));
	values[3] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	values[4] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull)
		rc = SPI_execute_plan(keep_plan(&read_plan, QUEUE_READ_SQL, 3, argtypes),
							  values, NULL, false, 0);
	else
		rc = SPI_execute_plan(keep_plan(&read_poison_plan, QUEUE_READ_POISON_SQL, 5, argtypes),
							  values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.queue failed: %s", SPI_result_code_string(rc));
	/* the tuplestore lives in the query's memory, beyond SPI_finish() */
	for (i = 0; i < SPI_processed; i++)
	{
		Datum		row[6];
		bool		nulls[6];

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, row, nulls);
		tuplestore_putvalues(store, tupdesc, row, nulls);
	}
	SPI_finish();
	restore_user(&sw);
	return (Datum) 0;
}

/*
 * ack() and nack(): one statement on the events ids names, as the caller
 * (the planner settings in a GUC nest level of their own); returns how many
 * it changed.  $1 ids, $2 (nack) the delay.
 */
static Datum
queue_settle(FunctionCallInfo fcinfo, SPIPlanPtr *plan, const char *sql,
			 int nargs, Oid *argtypes)
{
	Datum		values[2];
	int			nestlevel;
	int			rc;
	uint64		processed;
	int			i;

	for (i = 0; i < nargs; i++)
		values[i] = PG_GETARG_DATUM(i);
	nestlevel = NewGUCNestLevel();
	plan_for_indexes(GUC_ACTION_SAVE, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(keep_plan(plan, sql, nargs, argtypes), values, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "settling events of notifier.queue failed: %s", SPI_result_code_string(rc));
	processed = SPI_processed;
	SPI_finish();
	AtEOXact_GUC(false, nestlevel);
	PG_RETURN_INT64((int64) processed);
}

PG_FUNCTION_INFO_V1(notifier_ack);

/* notifier.ack(ids bigint[]) -> how many events were removed */
Datum
notifier_ack(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {INT8ARRAYOID};

	require_arg(fcinfo, 0, "ids", "Pass the ids that notifier.read() returned.");
	return queue_settle(fcinfo, &ack_plan,
						"DELETE FROM notifier.queue q"
						" WHERE q.id OPERATOR(pg_catalog.=) ANY ($1)",
						1, argtypes);
}

PG_FUNCTION_INFO_V1(notifier_nack);

/* notifier.nack(ids bigint[], delay interval) -> how many events */
Datum
notifier_nack(PG_FUNCTION_ARGS)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INTERVALOID};
	Interval	zero;

	require_arg(fcinfo, 0, "ids", "Pass the ids that notifier.read() returned.");
	require_arg(fcinfo, 1, "delay", "A delay of zero makes the events visible at once.");
	memset(&zero, 0, sizeof(zero));
	if (DatumGetBool(DirectFunctionCall2(interval_lt, PG_GETARG_DATUM(1),
										 IntervalPGetDatum(&zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delay must not be negative"),
				 errhint("A delay of zero makes the events visible at once.")));
	return queue_settle(fcinfo, &nack_plan,
						"UPDATE notifier.queue q"
						" SET vt = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $2"
						" WHERE q.id OPERATOR(pg_catalog.=) ANY ($1)",
						2, argtypes);
}
