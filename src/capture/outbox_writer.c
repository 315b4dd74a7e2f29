/*-------------------------------------------------------------------------
 *
 * outbox_writer.c
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
 * The wake-up is a flag and a latch in shared memory (worker_wake.c), set from
 * the commit callback: no lock is shared by committing transactions, as
 * NOTIFY's is.  A transaction that rolls back wakes nobody; one that is
 * prepared (two-phase commit) does not wake the worker at COMMIT PREPARED,
 * which finds its events on its next periodic look.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "common/extension.h"
#include "capture/outbox_writer.h"
#include "pg_notifier.h"
#include "common/stats.h"
#include "common/worker_wake.h"

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

/*
 * Events are written one by one, or -- between outbox_batch_begin() and
 * outbox_batch_end(), as at a coalescing commit -- with the outbox opened
 * once (when the first event comes) and rows inserted up to OUTBOX_MULTI
 * or OUTBOX_MULTI_BYTES at a time, with heap_multi_insert; the index
 * entries follow, by the TIDs the heap gave the rows.  A batch lives
 * in the transaction: an error in between ends it with the transaction,
 * whose resource owner closes the relation.
 */
#define OUTBOX_MULTI 1000
#define OUTBOX_MULTI_BYTES (1024 * 1024)

typedef struct OutboxWriter
{
	MemoryContext cxt;			/* where it and its rows live */
	Oid			seqid;			/* notifier.outbox_id_seq */
	Relation	rel;
	CatalogIndexState indstate;
	int			nslots;			/* rows waiting in slots[] */
	Size		bytes;			/* and their size */
	TupleTableSlot *slots[OUTBOX_MULTI];
} OutboxWriter;

static bool batching = false;
static OutboxWriter *batch = NULL;	/* opened by the batch's first event */

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
				worker_wake(MyDatabaseId, WAKE_OUTBOX);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;

			/*
			 * a batch an error cut short: its memory went with the
			 * transaction
			 */
			batch = NULL;
			batching = false;
			break;
		default:
			break;
	}
}

/*
 * The OIDs of the outbox and its sequence.  The cache is filled only once
 * both are known: the lookups themselves may process invalidations, which
 * run the callback above (a VACUUM of the outbox sends one, for instance).
 */
static void
outbox_lookup(Oid *relid, Oid *seqid)
{
	if (!OidIsValid(outbox_relid))
	{
		Oid			rel = notifier_table_oid("outbox");
		Oid			seq = get_relname_relid("outbox_id_seq", get_rel_namespace(rel));

		if (!OidIsValid(seq))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("sequence %s.outbox_id_seq does not exist", NOTIFIER_SCHEMA),
					 errhint(NOTIFIER_REINSTALL_HINT)));
		outbox_relid = rel;
		outbox_seqid = seq;
	}
	*relid = outbox_relid;
	*seqid = outbox_seqid;
}

/*
 * Lock the outbox and its sequence as a write will (coalesce.c takes them
 * when a transaction first holds an event, see there).
 */
void
outbox_lock(void)
{
	Oid			relid;
	Oid			seqid;

	outbox_lookup(&relid, &seqid);
	LockRelationOid(relid, RowExclusiveLock);
	LockRelationOid(seqid, RowExclusiveLock);
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
				 errhint(NOTIFIER_REINSTALL_HINT)));

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

static void
outbox_register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(outbox_xact_callback, NULL);
	CacheRegisterRelcacheCallback(outbox_relcache_callback, (Datum) 0);
	callbacks_registered = true;
}

/* the writer and everything it opens live in cxt */
static OutboxWriter *
writer_open(MemoryContext cxt)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	OutboxWriter *wr = palloc0(sizeof(OutboxWriter));
	Oid			relid;

	wr->cxt = cxt;
	outbox_lookup(&relid, &wr->seqid);
	wr->rel = table_open(relid, RowExclusiveLock);
	wr->indstate = CatalogOpenIndexes(wr->rel);
	check_outbox(wr->rel, wr->indstate);
	MemoryContextSwitchTo(oldcxt);
	return wr;
}

/* the index entries of a row just inserted (its TID is in the slot) */
static void
insert_index_entries(OutboxWriter *wr, TupleTableSlot *slot)
{
	CatalogIndexState ind = wr->indstate;
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];

	for (int i = 0; i < ind->ri_NumIndices; i++)
	{
		IndexInfo  *ii = ind->ri_IndexRelationInfo[i];
		Relation	index = ind->ri_IndexRelationDescs[i];

		if (!ii->ii_ReadyForInserts)
			continue;
		FormIndexDatum(ii, slot, NULL, values, isnull);
		index_insert(index, values, isnull, &slot->tts_tid, wr->rel,
					 index->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
#if PG_VERSION_NUM >= 140000
					 false,
#endif
					 ii);
	}
}

/* insert the rows waiting in the slots */
static void
writer_flush(OutboxWriter *wr)
{
	if (wr->nslots == 0)
		return;
	heap_multi_insert(wr->rel, wr->slots, wr->nslots, GetCurrentCommandId(true),
					  0, NULL);
	for (int i = 0; i < wr->nslots; i++)
	{
		insert_index_entries(wr, wr->slots[i]);
		ExecClearTuple(wr->slots[i]);
	}
	wr->nslots = 0;
	wr->bytes = 0;
}

static void
writer_close(OutboxWriter *wr)
{
	writer_flush(wr);
	for (int i = 0; i < OUTBOX_MULTI && wr->slots[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(wr->slots[i]);
	CatalogCloseIndexes(wr->indstate);
	table_close(wr->rel, RowExclusiveLock);
	pfree(wr);
}

/* the events written from now until outbox_batch_end() go as one batch */
void
outbox_batch_begin(void)
{
	outbox_register_callbacks();	/* an abort must end the batch */
	batching = true;
}

void
outbox_batch_end(void)
{
	if (batch != NULL)
		writer_close(batch);
	batch = NULL;
	batching = false;
}

/*
 * Write an event to the outbox; notify_payload, if not NULL, is what the
 * worker is to send with NOTIFY on the event's channel.
 */
void
outbox_write(const Watch *w, const char *event, const char *notify_payload,
			 TimestampTz ts)
{
	Datum		values[OUTBOX_NCOLUMNS];
	bool		nulls[OUTBOX_NCOLUMNS] = {0};
	OutboxWriter *wr;
	HeapTuple	tuple;
	MemoryContext oldcxt;

	outbox_register_callbacks();
	if (batching && batch == NULL)
		batch = writer_open(TopTransactionContext);
	wr = batch ? batch : writer_open(CurrentMemoryContext);

	/* the xid first, then the id: see outbox_relay.c */
	(void) GetCurrentTransactionId();

	values[0] = Int64GetDatum(nextval_internal(wr->seqid, false));
	values[1] = CStringGetTextDatum(w->opts.channel);
	values[2] = CStringGetTextDatum(event);
	if (notify_payload != NULL)
		values[3] = CStringGetTextDatum(notify_payload);
	else
		nulls[3] = true;
	values[4] = TimestampTzGetDatum(ts);

	/* the row lives in the writer's memory until it is inserted */
	oldcxt = MemoryContextSwitchTo(wr->cxt);
	tuple = heap_form_tuple(RelationGetDescr(wr->rel), values, nulls);
	if (wr->slots[wr->nslots] == NULL)
		wr->slots[wr->nslots] = MakeSingleTupleTableSlot(RelationGetDescr(wr->rel),
														 &TTSOpsHeapTuple);
	MemoryContextSwitchTo(oldcxt);
	ExecStoreHeapTuple(tuple, wr->slots[wr->nslots], true);
	wr->nslots++;
	wr->bytes += tuple->t_len;

	if (wr != batch)
		writer_close(wr);
	else if (wr->nslots == OUTBOX_MULTI || wr->bytes >= OUTBOX_MULTI_BYTES)
		writer_flush(wr);

	wake_at_commit = true;
	stats_count(COUNT_OUTBOX_WRITTEN);
}
