/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  delivery => 'outbox', the writing side: an event becomes a row of
 *	  notifier.outbox in the transaction that made the change, and the
 *	  worker of the database is woken when that transaction commits.
 *
 * The row goes straight into the heap and the index, the way catalog rows
 * are written: no executor, no plan, no permission check (the role that
 * changes a watched table needs no privilege on the outbox, which PUBLIC
 * cannot read), and no trigger or rule on the outbox fires.  Its id comes
 * from notifier.outbox_id_seq, taken after the transaction has its xid --
 * the worker's reading of the outbox (outbox_relay.c) relies on that.
 *
 * The wake-up is a flag and a latch in shared memory (stats.c), set from
 * the commit callback: no lock is shared by committing transactions, as
 * NOTIFY's is.  A transaction that rolls back wakes nobody; one that is
 * prepared (two-phase commit) does not wake the worker at COMMIT PREPARED,
 * which finds its events on its next periodic look.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "extension.h"
#include "outbox.h"
#include "pg_notifier.h"
#include "stats.h"

/* the columns of notifier.outbox, in order */
static const Oid outbox_column_types[] = {
	INT8OID,					/* id */
	TEXTOID,					/* channel */
	JSONOID,					/* event */
	TEXTOID,					/* notify */
	TIMESTAMPTZOID				/* created_at */
};
#define OUTBOX_NCOLUMNS lengthof(outbox_column_types)

/*
 * The outbox and its sequence, looked up once and forgotten when the
 * relcache says either changed (DROP EXTENSION, for one).
 */
static Oid	outbox_relid = InvalidOid;
static Oid	outbox_seqid = InvalidOid;
static bool callbacks_registered = false;

/* did this transaction write events? */
static bool wake_at_commit = false;

static void
outbox_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == outbox_relid || relid == outbox_seqid)
		outbox_relid = outbox_seqid = InvalidOid;
}

static void
outbox_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit)
				stats_outbox_wake(MyDatabaseId);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

static void
outbox_lookup(void)
{
	Oid			nsp;

	if (OidIsValid(outbox_relid))
		return;
	outbox_relid = notifier_table_oid("outbox");
	nsp = get_rel_namespace(outbox_relid);
	outbox_seqid = get_relname_relid("outbox_id_seq", nsp);
	if (!OidIsValid(outbox_seqid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence %s.outbox_id_seq does not exist", NOTIFIER_SCHEMA),
				 errhint("Reinstall the extension: DROP EXTENSION pg_notifier; CREATE EXTENSION pg_notifier;")));
}

/*
 * The outbox must be as the install script made it: these columns, and
 * indexes on plain columns (which is all that is maintained here).
 */
static void
check_outbox(Relation rel, CatalogIndexState indstate)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	bool		ok = tupdesc->natts == OUTBOX_NCOLUMNS;

	for (int i = 0; ok && i < tupdesc->natts; i++)
		ok = !TupleDescAttr(tupdesc, i)->attisdropped &&
			TupleDescAttr(tupdesc, i)->atttypid == outbox_column_types[i];
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table %s.outbox has been altered", NOTIFIER_SCHEMA),
				 errdetail("pg_notifier writes its rows as (id bigint, channel text, event json, notify text, created_at timestamptz)."),
				 errhint("Reinstall the extension: DROP EXTENSION pg_notifier; CREATE EXTENSION pg_notifier;")));

	for (int i = 0; i < indstate->ri_NumIndices; i++)
	{
		IndexInfo  *ii = indstate->ri_IndexRelationInfo[i];

		if (ii->ii_Expressions != NIL || ii->ii_Predicate != NIL ||
			ii->ii_ExclusionOps != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("index \"%s\" on table %s.outbox cannot be maintained by pg_notifier",
							RelationGetRelationName(indstate->ri_IndexRelationDescs[i]),
							NOTIFIER_SCHEMA),
					 errdetail("Events are written to the outbox directly, which maintains only indexes on plain columns."),
					 errhint("Drop that index.")));
	}
}

/*
 * Write an event to the outbox; notify_payload, if not NULL, is what the
 * worker is to send with NOTIFY on the event's channel.
 */
void
outbox_write(const Watch *w, const char *event, const char *notify_payload,
			 TimestampTz ts)
{
	Relation	rel;
	CatalogIndexState indstate;
	Datum		values[OUTBOX_NCOLUMNS];
	bool		nulls[OUTBOX_NCOLUMNS] = {0};
	HeapTuple	tuple;

	if (!callbacks_registered)
	{
		RegisterXactCallback(outbox_xact_callback, NULL);
		CacheRegisterRelcacheCallback(outbox_relcache_callback, (Datum) 0);
		callbacks_registered = true;
	}
	outbox_lookup();

	/* the xid first, then the id: see outbox_relay.c */
	(void) GetCurrentTransactionId();

	rel = table_open(outbox_relid, RowExclusiveLock);
	indstate = CatalogOpenIndexes(rel);
	check_outbox(rel, indstate);

	values[0] = Int64GetDatum(nextval_internal(outbox_seqid, false));
	values[1] = CStringGetTextDatum(w->opts.channel);
	values[2] = CStringGetTextDatum(event);
	if (notify_payload != NULL)
		values[3] = CStringGetTextDatum(notify_payload);
	else
		nulls[3] = true;
	values[4] = TimestampTzGetDatum(ts);

	tuple = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	CatalogTupleInsertWithInfo(rel, tuple, indstate);
	heap_freetuple(tuple);

	CatalogCloseIndexes(indstate);
	table_close(rel, RowExclusiveLock);

	wake_at_commit = true;
	stats_count(COUNT_OUTBOX_WRITTEN);
}
