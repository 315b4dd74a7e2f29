/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  The worker's side of notifier.backfill(): reading a watched table in
 *	  key order, a batch per transaction, and writing one READ event per
 *	  row to the outbox, from where the relay delivers it to the channel's
 *	  routes like any event.
 *
 * One batch is one step of the worker's loop (worker.c), never a loop of
 * its own: between two batches the worker drains notifications, moves the
 * outbox and sends webhooks, so live events keep flowing.  A batch, in one
 * transaction:
 *
 *	1. locks the backfill's row of notifier.backfill_jobs (a concurrent
 *	   cancel_backfill() waits for the batch, or the batch sees it);
 *	2. as the table's owner, takes the next batch_size keys after last_key
 *	   in key order and locks their rows FOR SHARE (the "lock" query of
 *	   common/backfill_query.c).  A writer that changed such a row before
 *	   is waited for and the row's newest version is what counts
 *	   (EvalPlanQual); a writer that changes it after waits until the batch
 *	   commits;
 *	3. as the role that called backfill(), with a fresh snapshot, reads
 *	   the rows between last_key and the highest key locked that satisfy
 *	   "where" (the "read" query); of those, the rows that step 2 locked
 *	   (matched by key, both in key order) get a READ event, built with
 *	   the watch's own Watch (payload mode, columns, exclude:
 *	   capture/event.c) and written to the outbox (capture/outbox_writer.c,
 *	   which takes the ids after the xid);
 *	4. writes last_key and rows_sent, or state 'done' after the last keys.
 *
 * Why the last event of each key reflects the row's last committed state:
 * an outbox id is taken when an event is written, before its transaction
 * commits.  A change the read (3) sees committed before the read's
 * snapshot, so its event's id is lower than the READ event's; a change to
 * a locked row the read does not see cannot happen before the batch
 * commits, so its id is higher.  A row that the read sees but the lock
 * did not lock (inserted into the range since, or moved into it by a key
 * update) gets no READ event: it could be changed by a transaction whose
 * id is taken before the READ event's and which commits after the read's
 * snapshot; its own INSERT or UPDATE event says what it is.  A row the
 * read does not see gets no READ event either.  The relay delivers in id
 * order.
 *
 * Why two queries: the lock needs FOR SHARE, which PostgreSQL allows only
 * with the UPDATE privilege, while backfill() asks only for SELECT; and
 * "where", which the user wrote, must run with the caller's rights only.
 * So the lock, which runs nothing of the caller's, runs as the table's
 * owner (index maintenance runs as it too), and the read, "where" and the
 * type output functions as the caller -- both in a security-restricted
 * operation, inside a GUC nest level rolled back at the end, with
 * search_path = pg_catalog, pg_temp (common/owner_switch.c).  Row security
 * applies to the caller's read.
 *
 * Failures: the transaction is rolled back (nothing of the batch was sent)
 * and the error kept in last_error.  A transient error (a lock timeout --
 * a batch waits at most BACKFILL_LOCK_TIMEOUT for a row, not the worker's
 * 10 s, since live events wait with it -- a deadlock, a serialization
 * failure) is retried with backoff, for ever: a batch is never skipped.  Another error is retried BACKFILL_MAX_FAILURES times,
 * then the backfill is 'failed'; the table, its watch or the role gone
 * fail it at once.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "capture/event.h"
#include "capture/outbox_writer.h"
#include "capture/watch_cache.h"
#include "common/backfill_query.h"
#include "common/extension.h"
#include "common/owner_switch.h"
#include "worker/backfill.h"
#include "worker/forward.h"
#include "worker/worker_xact.h"

/*
 * How long a batch waits for a row lock before it gives up (and is tried
 * again after a backoff): shorter than the worker's lock_timeout (10 s),
 * since the whole loop -- live events included -- waits with it.
 */
#define BACKFILL_LOCK_TIMEOUT "1s"

/*
 * The settings of a batch's transaction: the lock timeout above, and those
 * the text form of last_key depends on, so that a key written by one batch
 * reads back the same in the next whatever the server's settings became.
 */
typedef struct BatchSetting
{
	const char *name;
	const char *value;
} BatchSetting;

static const BatchSetting batch_settings[] = {
	{"lock_timeout", BACKFILL_LOCK_TIMEOUT},
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "1"},
};

/* rows fetched from the read query at a time */
#define BACKFILL_FETCH 256

/* retries of a batch that failed for a reason that is not transient */
#define BACKFILL_MAX_FAILURES 5

/* backoff after a failed batch: doubling from the base, at most the max */
#define BACKFILL_BACKOFF_BASE_MS 1000
#define BACKFILL_BACKOFF_MAX_MS 60000

/* when to look for a batch to run: 0 now, DT_NOEND when woken */
static TimestampTz next_at = 0;

/* the backfill a batch is for, as its row says */
typedef struct BackfillJob
{
	int64		id;
	Oid			relid;
	char	   *channel;
	Oid			role;
	char	   *where;
	int			batch_size;
	ArrayType  *last_key;		/* NULL: from the start */
	int			failures;
} BackfillJob;

/* A backfill was started, or the worker is to look again. */
void
backfill_wake(void)
{
	next_at = 0;
}

/* When a batch may be due (DT_NOEND: not before backfill_wake()). */
TimestampTz
backfill_next_at(void)
{
	return next_at;
}

/*
 * The running backfill whose turn it is, its row locked; false when there
 * is none, or (with *due later) none is due yet.
 */
static bool
pick_job(BackfillJob *job, TimestampTz *due)
{
	static SPIPlanPtr plan = NULL;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	keep_plan(&plan,
			  "SELECT id, relid, channel, role, \"where\", batch_size, last_key,"
			  " failures, next_attempt_at FROM notifier.backfill_jobs"
			  " WHERE state OPERATOR(pg_catalog.=) 'running'"
			  " ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
			  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.backfill_jobs failed");
	if (SPI_processed == 0)
	{
		*due = DT_NOEND;
		return false;
	}
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	*due = DatumGetTimestampTz(SPI_getbinval(row, desc, 9, &isnull));
	if (*due > GetCurrentTimestamp())
		return false;
	job->id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	job->relid = DatumGetObjectId(SPI_getbinval(row, desc, 2, &isnull));
	job->channel = TextDatumGetCString(SPI_getbinval(row, desc, 3, &isnull));
	job->role = DatumGetObjectId(SPI_getbinval(row, desc, 4, &isnull));
	d = SPI_getbinval(row, desc, 5, &isnull);
	job->where = isnull ? NULL : TextDatumGetCString(d);
	job->batch_size = DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull));
	d = SPI_getbinval(row, desc, 7, &isnull);
	job->last_key = isnull ? NULL : DatumGetArrayTypePCopy(d);
	job->failures = DatumGetInt32(SPI_getbinval(row, desc, 8, &isnull));
	return true;
}

/* The lower key of the batch: last_key, read with the key types' input. */
static void
lower_key(const BackfillJob *job, const BackfillScan *scan, Datum *values,
		  char *nulls)
{
	Datum	   *elems;
	bool	   *elnulls;
	int			n;

	deconstruct_array(job->last_key, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elnulls, &n);
	if (n != scan->nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("last key of backfill " INT64_FORMAT " has %d columns, the table's key %d",
						job->id, n, scan->nkeys),
				 errdetail("The table's key changed since the backfill started."),
				 errhint("Start a new backfill.")));
	for (int i = 0; i < n; i++)
	{
		Oid			func;
		Oid			ioparam;

		getTypeInputInfo(scan->keytypes[i], &func, &ioparam);
		values[i] = OidInputFunctionCall(func, TextDatumGetCString(elems[i]), ioparam, -1);
		nulls[i] = ' ';
	}
}

/*
 * Step 2, as the table's owner: lock the next keys.  They go to *locked
 * (nkeys values per row, in key order), the highest one also to
 * values[nkeys..2 nkeys) and, as text, to *upper.  Returns how many rows
 * were locked.
 */
static uint64
lock_keys(const BackfillJob *job, Relation rel, const BackfillScan *scan,
		  Datum *values, char *nulls, Datum **locked, ArrayType **upper)
{
	int			n = scan->nkeys;
	OwnerSwitch sw;
	uint64		nlocked;

	become_owner(rel->rd_rel->relowner, &sw);
	if (job->last_key != NULL)
		lower_key(job, scan, values, nulls);
	values[2 * n] = Int64GetDatum(job->batch_size);
	nulls[2 * n] = ' ';
	if (SPI_execute_with_args(backfill_lock_sql(scan, job->last_key != NULL),
							  backfill_nparams(scan), backfill_param_types(scan),
							  values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "locking the rows of a backfill batch failed");
	nlocked = SPI_processed;
	*locked = palloc(sizeof(Datum) * n * Max(nlocked, 1));
	for (uint64 r = 0; r < nlocked; r++)
	{
		for (int i = 0; i < n; i++)
		{
			Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, i);
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
										  i + 1, &isnull);

			if (isnull)			/* a key column is NOT NULL */
				elog(ERROR, "key column %d of a locked row is null", i + 1);
			(*locked)[r * n + i] = datumCopy(d, att->attbyval, att->attlen);
		}
	}
	if (nlocked > 0)
	{
		Datum	   *keytext = palloc(sizeof(Datum) * n);

		for (int i = 0; i < n; i++)
		{
			Oid			func;
			bool		isvarlena;

			values[n + i] = (*locked)[(nlocked - 1) * n + i];
			nulls[n + i] = ' ';
			getTypeOutputInfo(scan->keytypes[i], &func, &isvarlena);
			keytext[i] = CStringGetTextDatum(OidOutputFunctionCall(func, values[n + i]));
		}
		*upper = construct_array(keytext, n, TEXTOID, -1, false, TYPALIGN_INT);
	}
	SPI_freetuptable(SPI_tuptable);
	restore_user(&sw);
	return nlocked;
}

/*
 * Step 3, as the caller of backfill(): read the rows of the batch and write
 * the READ events of those that step 2 locked (nlocked keys in locked, in
 * key order, as the read returns its rows) to the outbox.  Returns how
 * many.
 */
static uint64
send_rows(const BackfillJob *job, Relation rel, const Watch *w,
		  const BackfillScan *scan, Datum *values, char *nulls,
		  const Datum *locked, uint64 nlocked)
{
	uint64		li = 0;			/* the locked key to match next */

	OwnerSwitch sw;
	Portal		portal;
	TupleTableSlot *slot;
	StringInfoData buf;
	TimestampTz ts = GetCurrentTransactionStartTimestamp();
	uint64		sent = 0;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext rowcxt;

	become_owner(job->role, &sw);
	portal = SPI_cursor_open_with_args(NULL,
									   backfill_read_sql(scan, job->where, job->last_key != NULL),
									   backfill_nparams(scan), backfill_param_types(scan),
									   values, nulls, false, 0);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
	/* what one row's event needs (detoasted values, output), freed row by row */
	rowcxt = AllocSetContextCreate(cxt, "pg_notifier backfill row",
								   ALLOCSET_DEFAULT_SIZES);
	outbox_batch_begin();
	for (;;)
	{
		SPI_cursor_fetch(portal, true, BACKFILL_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			ChangeEvent ev = {.op = OP_READ,.newslot = slot,.ts = ts};
			Datum		key[INDEX_MAX_KEYS];
			int			cmp = 1;

			CHECK_FOR_INTERRUPTS();
			for (int i = 0; i < scan->nkeys; i++)
			{
				bool		isnull;

				key[i] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
									   i + 1, &isnull);
			}
			while (li < nlocked &&
				   (cmp = backfill_compare_keys(scan, key, locked + li * scan->nkeys)) > 0)
				li++;
			if (li == nlocked || cmp != 0)
				continue;		/* not locked: see the file header */
			ExecClearTuple(slot);
			memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
			for (int i = 0; i < scan->natts; i++)
				slot->tts_values[scan->attnums[i] - 1] =
					SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, i + 1,
								  &slot->tts_isnull[scan->attnums[i] - 1]);
			ExecStoreVirtualTuple(slot);
			MemoryContextSwitchTo(rowcxt);
			initStringInfo(&buf);
			event_build(&buf, w, &ev, NULL, NULL);
			outbox_write(w, buf.data, NULL, ts);
			MemoryContextSwitchTo(cxt);
			MemoryContextReset(rowcxt);
			sent++;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	outbox_batch_end();
	SPI_cursor_close(portal);
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(rowcxt);
	restore_user(&sw);
	return sent;
}

/*
 * The batch's progress, in its transaction; next_attempt_at moves on, so
 * that several running backfills take turns.
 */
static void
record_progress(const BackfillJob *job, ArrayType *upper, uint64 sent, bool done)
{
	static SPIPlanPtr plan = NULL;
	static const Oid argtypes[] = {INT8OID, TEXTARRAYOID, INT8OID, BOOLOID};
	Datum		args[4];
	char		nulls[4] = "    ";

	keep_plan(&plan,
			  "UPDATE notifier.backfill_jobs"
			  " SET last_key = COALESCE($2, last_key),"
			  " rows_sent = rows_sent OPERATOR(pg_catalog.+) $3,"
			  " state = CASE WHEN $4 THEN 'done' ELSE state END,"
			  " finished_at = CASE WHEN $4 THEN pg_catalog.now() END,"
			  " failures = 0, last_error = NULL, next_attempt_at = pg_catalog.now()"
			  " WHERE id OPERATOR(pg_catalog.=) $1",
			  4, argtypes);
	args[0] = Int64GetDatum(job->id);
	args[1] = PointerGetDatum(upper);
	nulls[1] = upper ? ' ' : 'n';
	args[2] = Int64GetDatum((int64) sent);
	args[3] = BoolGetDatum(done);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "updating notifier.backfill_jobs failed");
}

/* One batch of job, in the worker transaction that locked its row. */
static void
run_batch(const BackfillJob *job)
{
	Relation	rel;
	Trigger    *tg;
	Watch	   *w;
	BackfillScan scan;
	Datum	   *values;
	char	   *nulls;
	ArrayType  *upper = NULL;
	Datum	   *locked;
	uint64		nlocked;
	uint64		sent = 0;

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u of backfill " INT64_FORMAT " does not exist",
						job->role, job->id),
				 errdetail("A backfill reads the table as the role that started it.")));
	rel = try_relation_open(job->relid, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table with OID %u of backfill " INT64_FORMAT " does not exist",
						job->relid, job->id)));
	tg = watch_trigger_of_channel(rel, job->channel);
	if (tg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is no longer watched on channel \"%s\"",
						RelationGetRelationName(rel), clip(job->channel)),
				 errdetail("Backfill " INT64_FORMAT " sends the rows as that watch would.", job->id)));
	w = watch_lookup_trigger(rel, tg);
	if (w->opts.delivery == DELIVERY_NOTIFY)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the watch of table \"%s\" on channel \"%s\" delivers with NOTIFY only",
						RelationGetRelationName(rel), clip(job->channel)),
				 errdetail("A backfill writes its events to the outbox.")));
	backfill_scan_init(&scan, rel, w);

	values = palloc0(sizeof(Datum) * backfill_nparams(&scan));
	nulls = palloc(backfill_nparams(&scan));
	memset(nulls, 'n', backfill_nparams(&scan));
	nlocked = lock_keys(job, rel, &scan, values, nulls, &locked, &upper);
	if (nlocked > 0)
		sent = send_rows(job, rel, w, &scan, values, nulls, locked, nlocked);
	record_progress(job, upper, sent, nlocked < (uint64) job->batch_size);
	relation_close(rel, AccessShareLock);
}

/*
 * A batch failed (its transaction is rolled back): keep the error, retry
 * after a backoff, or fail the backfill.
 */
static void
record_failure(const BackfillJob *job, ErrorData *edata)
{
	static SPIPlanPtr plan = NULL;
	static const Oid argtypes[] = {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID};
	Datum		args[4];
	bool		transient = error_is_transient(edata->sqlerrcode);
	bool		permanent;
	long		ms;

	permanent = !transient &&
		(edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		 edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT ||
		 job->failures + 1 >= BACKFILL_MAX_FAILURES);
	ms = Min((long) BACKFILL_BACKOFF_MAX_MS,
			 (long) BACKFILL_BACKOFF_BASE_MS << Min(job->failures, 6));
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 permanent ?
			 errmsg("backfill " INT64_FORMAT " failed", job->id) :
			 errmsg("batch of backfill " INT64_FORMAT " failed, tried again in %ld ms",
					job->id, ms),
			 errdetail("%s", clip(edata->message)),
			 errhint("Nothing of the batch was sent.")));

	if (!worker_xact_begin())
	{
		worker_xact_commit();	/* the extension is gone */
		return;
	}
	keep_plan(&plan,
			  "UPDATE notifier.backfill_jobs"
			  " SET failures = failures OPERATOR(pg_catalog.+) 1, last_error = $2,"
			  " next_attempt_at = $3,"
			  " state = CASE WHEN $4 THEN 'failed' ELSE state END,"
			  " finished_at = CASE WHEN $4 THEN pg_catalog.now() END"
			  " WHERE id OPERATOR(pg_catalog.=) $1"
			  " AND state OPERATOR(pg_catalog.=) 'running'",
			  4, argtypes);
	args[0] = Int64GetDatum(job->id);
	args[1] = CStringGetTextDatum(clip(edata->message));
	args[2] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms));
	args[3] = BoolGetDatum(permanent);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "updating notifier.backfill_jobs failed");
	worker_xact_commit();
}

/*
 * Run one batch of the backfill whose turn it is, if one is due.  Outside
 * a transaction; in the worker's per-turn memory context.
 */
void
backfill_step(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	BackfillJob job;
	ErrorData  *volatile failed = NULL;

	if (next_at == DT_NOEND || GetCurrentTimestamp() < next_at)
		return;
	memset(&job, 0, sizeof(job));
	pgstat_report_activity(STATE_RUNNING, "backfilling");
	PG_TRY();
	{
		TimestampTz due;

		if (!worker_xact_begin())
		{
			worker_xact_commit();	/* the extension is gone */
			next_at = DT_NOEND;
		}
		else if (!pick_job(&job, &due))
		{
			worker_xact_commit();
			next_at = due;
		}
		else
		{
			for (int i = 0; i < lengthof(batch_settings); i++)
				(void) set_config_option(batch_settings[i].name, batch_settings[i].value,
										 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
										 true, 0, false);
			run_batch(&job);
			worker_xact_commit();
			next_at = 0;		/* the next batch, at the next turn */
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		failed = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();

	if (failed != NULL)
	{
		worker_xact_abort();
		if (job.id != 0)
		{
			record_failure(&job, failed);
			next_at = 0;
		}
		else
		{
			/* no backfill to blame: look again in a while */
			ereport(WARNING,
					(errcode(failed->sqlerrcode),
					 errmsg("looking for a backfill batch to run failed"),
					 errdetail("%s", clip(failed->message))));
			next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  BACKFILL_BACKOFF_BASE_MS);
		}
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}
