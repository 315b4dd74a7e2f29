/*-------------------------------------------------------------------------
 *
 * queue_sink.c
 *	  The queue sink: the worker writes the events of a route into a queue
 *	  table, notifier.queue or any table with compatible columns.
 *
 * What a queue table must look like is checked by add_queue(), and again
 * here before the worker first writes to a route (queue_table.c).
 *
 * One drain writes all of a route's events with one INSERT ... SELECT from
 * unnest() of a text array: the order of the array is the order of the ids
 * a serial column hands out.  The INSERT runs as the owner of the queue
 * table, in a security-restricted operation, so that triggers on it never
 * run with the worker's (superuser) rights; nor do deferred ones (see
 * fire_deferred_triggers()).  The caller (forward.c) passes at most pg_notifier.max_batch_bytes of
 * events (or one larger event), so the array stays far below its 1 GB limit.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "common/owner_switch.h"
#include "common/queue_table.h"
#include "worker/sinks/queue_sink.h"

/* a route's prepared INSERT */
typedef struct QueueSink
{
	SPIPlanPtr	plan;
} QueueSink;

static Oid
queue_table_owner(Route *route)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(route->queue_table));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the queue table of route " INT64_FORMAT " (oid %u) no longer exists",
						route->id, route->queue_table),
				 errhint("Remove the route with notifier.remove_route(" INT64_FORMAT ").",
						 route->id)));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

static QueueSink *
queue_sink_prepare(Route *route)
{
	QueueColumns columns;
	QueueSink  *sink;
	char	   *sql;
	Oid			argtypes[3] = {TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID};
	SPIPlanPtr	plan;

	(void) queue_table_owner(route);	/* is it still there? */
	queue_table_check(route->queue_table, &columns);

	sql = psprintf("INSERT INTO %s (channel, payload%s) "
				   "SELECT $1, p::%s%s FROM pg_catalog.unnest($2) AS u(p)",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(route->queue_table)),
											  get_rel_name(route->queue_table)),
				   columns.has_received_at ? ", received_at" : "",
				   columns.payload_type == JSONBOID ? "pg_catalog.jsonb" : "pg_catalog.json",
				   columns.has_received_at ? ", $3" : "");
	plan = SPI_prepare(sql, 3, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);

	sink = MemoryContextAlloc(route->cxt, sizeof(QueueSink));
	sink->plan = plan;
	return sink;
}

/*
 * Fire now the deferred triggers the INSERT queued (a constraint trigger
 * INITIALLY DEFERRED on the queue table, or on a table its triggers write
 * to): at the commit they would run as the worker, with its rights, and an
 * error would fail the whole batch.  PostgreSQL refuses to fire them inside
 * the security-restricted operation, so such a write fails here, in the
 * route's subtransaction: its events become dead letters with that reason.
 */
static void
fire_deferred_triggers(void)
{
	ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

	stmt->constraints = NIL;
	stmt->deferred = false;
	AfterTriggerSetState(stmt);
}

/*
 * Write payloads (JSON texts, in order) into the route's queue table.  In a
 * transaction with a snapshot, connected to SPI; errors propagate (the
 * caller runs each route in a subtransaction).
 */
void
queue_sink_write(Route *route, char **payloads, int npayloads,
				 TimestampTz received_at)
{
	QueueSink  *sink = route->sink;
	Datum	   *elems;
	Datum		values[3];
	OwnerSwitch sw;
	int			rc;

	if (sink == NULL)
		route->sink = sink = queue_sink_prepare(route);

	elems = palloc(npayloads * sizeof(Datum));
	for (int i = 0; i < npayloads; i++)
		elems[i] = CStringGetTextDatum(payloads[i]);
	values[0] = CStringGetTextDatum(route->channel);
	values[1] = PointerGetDatum(construct_array(elems, npayloads, TEXTOID,
												-1, false, TYPALIGN_INT));
	values[2] = TimestampTzGetDatum(received_at);

	become_owner(queue_table_owner(route), &sw);
	rc = SPI_execute_plan(sink->plan, values, NULL, false, 0);
	fire_deferred_triggers();
	restore_user(&sw);

	if (rc != SPI_OK_INSERT || SPI_processed != (uint64) npayloads)
		elog(ERROR, "writing %d events into the queue table of route " INT64_FORMAT " failed: %s",
			 npayloads, route->id, SPI_result_code_string(rc));
}

void
queue_sink_free(Route *route)
{
	QueueSink  *sink = route->sink;

	if (sink != NULL)
	{
		SPI_freeplan(sink->plan);
		pfree(sink);
		route->sink = NULL;
	}
}
