/*-------------------------------------------------------------------------
 *
 * queue_table.c
 *	  What a queue table must look like: checked by notifier.add_queue()
 *	  and again by the worker before it first writes to the route.
 *
 * A queue table has a column "channel" (text or varchar), a column
 * "payload" (jsonb or json), optionally "received_at" (timestamptz), and
 * any other columns nullable or with a default.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "common/queue_table.h"
#include "common/sqlutil.h"

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

	require_table(rel, QUEUE_HINT);

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
