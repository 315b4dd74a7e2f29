/*-------------------------------------------------------------------------
 *
 * queue_sink.c
 *	  The queue sink: the worker writes the events of a route into a queue
 *	  table, notifier.queue or any table with compatible columns.
 *
 * A queue table has a column "channel" (text or varchar), a column
 * "payload" (jsonb or json), optionally "received_at" (timestamptz), and
 * any other columns nullable or with a default.  add_queue() checks that,
 * and so does the worker before it first writes to a route.
 *
 * One drain writes all of a route's events with one INSERT ... SELECT from
 * unnest() of a text array: the order of the array is the order of the ids
 * a serial column hands out.  The INSERT runs as the owner of the queue
 * table, in a security-restricted operation, so that triggers on it never
 * run with the worker's (superuser) rights.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "worker/sinks/queue_sink.h"

/* a route's prepared INSERT */
typedef struct QueueSink
{
	SPIPlanPtr	plan;
} QueueSink;

#define QUEUE_HINT "A queue table needs the columns channel text and payload jsonb (or json); see notifier.queue."

/*
 * Error out unless relid can be a queue table; say which columns it has.
 */
void
queue_table_check(Oid relid, QueueColumns *columns)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	const char *relname = RelationGetRelationName(rel);
	bool		has_channel = false;

	columns->payload_type = InvalidOid;
	columns->has_received_at = false;

	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", relname),
				 errhint(QUEUE_HINT)));

	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		const char *name = NameStr(att->attname);

		if (att->attisdropped)
			continue;
		if (strcmp(name, "channel") == 0)
		{
			if (att->atttypid != TEXTOID && att->atttypid != VARCHAROID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("column \"channel\" of queue table \"%s\" is of type %s, not text",
								relname, format_type_be(att->atttypid)),
						 errhint(QUEUE_HINT)));
			has_channel = true;
		}
		else if (strcmp(name, "payload") == 0)
		{
			if (att->atttypid != JSONBOID && att->atttypid != JSONOID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("column \"payload\" of queue table \"%s\" is of type %s, not jsonb or json",
								relname, format_type_be(att->atttypid)),
						 errhint(QUEUE_HINT)));
			columns->payload_type = att->atttypid;
		}
		else if (strcmp(name, "received_at") == 0)
		{
			if (att->atttypid != TIMESTAMPTZOID)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("column \"received_at\" of queue table \"%s\" is of type %s, not timestamptz",
								relname, format_type_be(att->atttypid)),
						 errhint("Drop or rename the column, or make it timestamptz.")));
			columns->has_received_at = true;
		}
		else if (att->attnotnull && !att->atthasdef && !att->attidentity &&
				 !att->attgenerated)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("column \"%s\" of queue table \"%s\" is NOT NULL and has no default",
							name, relname),
					 errdetail("The worker writes only channel, payload and received_at."),
					 errhint("Give the column a default, or make it nullable.")));
	}

	if (!has_channel || !OidIsValid(columns->payload_type))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("queue table \"%s\" has no column \"%s\"",
						relname, has_channel ? "payload" : "channel"),
				 errhint(QUEUE_HINT)));

	relation_close(rel, AccessShareLock);
}

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
	Oid			save_userid;
	int			save_sec_context;
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

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(queue_table_owner(route),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	rc = SPI_execute_plan(sink->plan, values, NULL, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);

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
