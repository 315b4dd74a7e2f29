/*-------------------------------------------------------------------------
 *
 * outbox_relay.c
 *	  delivery => 'outbox', the worker's side: moving committed events from
 *	  notifier.outbox to the routes of their channel.
 *
 * The worker reads the outbox in id order, RELAY_BATCH events (and at most
 * pg_notifier.max_batch_bytes of them) per transaction.  In that one transaction it writes each event to the routes
 * of its channel (forward.c), queues the NOTIFY of those that carry one,
 * and deletes them: whatever crashes when, an event is either still in the
 * outbox or at its routes (or a dead letter of a route that cannot take
 * it).  When a route fails for a transient reason (a lock timeout...), the
 * transaction is rolled back, the rows stay, and the batch is tried again
 * after a backoff: the relay waits rather than reorder or lose events.
 * (A webhook route holds it in
 * notifier.deliveries, from where sinks/remote_delivery.c sends it at least once.)  An
 * event of a channel without a route and without a NOTIFY stays in the
 * outbox until its channel has a route.
 *
 * Order.  An event's id is taken when it is written to the outbox: at its
 * transaction's commit for a coalesced event (the default), when the change
 * is made otherwise.  If transaction A committed before transaction B wrote
 * its events, A's ids are lower, and A is visible whenever B is: A's events
 * are delivered first.  The events of one transaction keep their order.
 * Only transactions that commit at the same time can come in either order.
 *
 * Where to start reading.  Reading from the lowest id every time would step
 * over the index entries of every row deleted since the last VACUUM, so the
 * worker remembers the highest id it has seen and the gaps below it: ids it
 * has not seen, which belong to transactions still running (or rolled back,
 * or deleted by hand).  It reads from the lowest gap up.  A gap is given up
 * once no transaction that could hold it can be running any more: an id is
 * taken after its transaction's xid (outbox_writer.c), and a gap below a visible
 * id was taken before the snapshot that saw that id, so its transaction's
 * xid is below the next xid read just after that snapshot (the gap's
 * horizon); once a later snapshot's xmin has reached the horizon, the gap
 * can never fill.  A long-running transaction that wrote events holds back
 * only where reading starts, never the delivery of other events.
 *
 * Vacuum.  The outbox is all dead rows: the worker VACUUMs it itself every
 * few seconds when it deleted enough rows, rather than leaving them to
 * autovacuum, which looks at a database once per autovacuum_naptime.
 *
 * The worker reads from the lowest id when it starts, when the routes
 * change (events may have waited for a route) and every few seconds (the
 * sequence may have been reset).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/vacuum.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "common/channel.h"
#include "common/extension.h"
#include "worker/forward.h"
#include "worker/outbox_relay.h"
#include "pg_notifier.h"
#include "worker/worker_xact.h"

/* events moved per transaction */
#define RELAY_BATCH 10000
/* the worker VACUUMs the outbox after this many deletions, at most this often */
#define OUTBOX_VACUUM_ROWS 10000
#define OUTBOX_VACUUM_MS 2000

/* ids lo..hi not seen, given up once a snapshot's xmin reaches horizon */
typedef struct Gap
{
	int64		lo;
	int64		hi;
	TransactionId horizon;
} Gap;

static MemoryContext relay_cxt = NULL;	/* the gaps; batch_cxt below it */
static MemoryContext batch_cxt = NULL;	/* one batch's rows */
static Gap *gaps = NULL;		/* sorted by lo, disjoint */
static int	ngaps = 0;
static int	maxgaps = 0;
static int64 seen_hi = 0;		/* highest id seen; 0: read from the start */
static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr delete_plan = NULL;
static uint64 deleted_since_vacuum = 0;
static TimestampTz last_vacuum = 0;

void
outbox_relay_reset(void)
{
	seen_hi = 0;
	ngaps = 0;
}

static void
gap_insert(int at, int64 lo, int64 hi, TransactionId horizon)
{
	if (ngaps == maxgaps)
	{
		maxgaps = Max(16, maxgaps * 2);
		gaps = gaps ? repalloc(gaps, maxgaps * sizeof(Gap))
			: MemoryContextAlloc(relay_cxt, maxgaps * sizeof(Gap));
	}
	memmove(&gaps[at + 1], &gaps[at], (ngaps - at) * sizeof(Gap));
	gaps[at].lo = lo;
	gaps[at].hi = hi;
	gaps[at].horizon = horizon;
	ngaps++;
}

static void
gap_remove(int at)
{
	memmove(&gaps[at], &gaps[at + 1], (ngaps - at - 1) * sizeof(Gap));
	ngaps--;
}

/* id was read; a snapshot taken before horizon was read saw it */
static void
note_seen(int64 id, TransactionId horizon)
{
	if (id > seen_hi)
	{
		if (id > seen_hi + 1)
			gap_insert(ngaps, seen_hi + 1, id - 1, horizon);
		seen_hi = id;
		return;
	}

	/* a late one: it fills (part of) a gap */
	for (int i = 0; i < ngaps; i++)
	{
		Gap		   *g = &gaps[i];

		if (id < g->lo || id > g->hi)
			continue;
		if (g->lo == g->hi)
			gap_remove(i);
		else if (id == g->lo)
			g->lo++;
		else if (id == g->hi)
			g->hi--;
		else
		{
			gap_insert(i + 1, id + 1, g->hi, g->horizon);
			gaps[i].hi = id - 1;
		}
		return;
	}
}

/* give up the gaps within [lo, hi] that no running transaction can fill */
static void
expire_gaps(int64 lo, int64 hi, TransactionId xmin)
{
	for (int i = ngaps - 1; i >= 0; i--)
		if (gaps[i].lo >= lo && gaps[i].hi <= hi &&
			TransactionIdFollowsOrEquals(xmin, gaps[i].horizon))
			gap_remove(i);
}

/*
 * The NOTIFY an outbox row asks for.  The trigger only writes what NOTIFY
 * accepts; a row written by hand that it would refuse is not sent, rather
 * than failing every attempt to move the outbox on.
 */
static void
send_notify(const char *channel, const char *payload)
{
	if (!channel_name_valid(channel) ||
		strlen(payload) >= NOTIFIER_NOTIFY_LIMIT)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("NOTIFY of an outbox event not sent"),
				 errdetail("NOTIFY would refuse its channel name or its payload of %zu bytes.",
						   strlen(payload)),
				 errhint("Rows of notifier.outbox are written by the pg_notifier trigger; do not write them by hand.")));
		return;
	}
	Async_Notify(channel, payload);
}

/* one batch of the outbox: see relay_batch() */
typedef struct RelayBatch
{
	RouteTable *routes;
	int64		cursor;			/* the last id read */
	bool		more;			/* the batch was full: read on */
} RelayBatch;

/*
 * Move the events after batch->cursor, up to RELAY_BATCH of them and
 * pg_notifier.max_batch_bytes of events (or one larger event alone), in
 * the worker transaction forward_xact() runs it in.  A transient error of a
 * route (*retry) leaves every row in the outbox.
 */
static RouteDelta *
relay_batch(void *arg, MemoryContext keep_cxt, ErrorData **retry)
{
	static const Oid read_argtypes[] = {INT8OID, INT4OID};
	static const Oid delete_argtypes[] = {TIDARRAYOID};
	RelayBatch *batch = arg;
	RouteTable *routes = batch->routes;
	TransactionId xmin;
	TransactionId horizon;
	Datum		args[2];
	int			nrows;
	InboxItem  *items;
	int			nitems = 0;
	Datum	   *tids;
	int			ntids = 0;
	Size		bytes = 0;
	RouteDelta *deltas;
	int64		first = batch->cursor + 1;

	plan_for_indexes(GUC_ACTION_LOCAL, false);
	xmin = GetActiveSnapshot()->xmin;
	horizon = XidFromFullTransactionId(ReadNextFullTransactionId());

	/*
	 * Read with the snapshot just taken (read_only): see the horizon.  A
	 * large event stays toasted in what is read until it is taken.
	 */
	keep_plan(&read_plan,
			  "SELECT ctid, id, channel, event, notify FROM notifier.outbox"
			  " WHERE id OPERATOR(pg_catalog.>) $1 ORDER BY id LIMIT $2",
			  2, read_argtypes);
	args[0] = Int64GetDatum(batch->cursor);
	args[1] = Int32GetDatum(RELAY_BATCH);
	if (SPI_execute_plan(read_plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.outbox failed");
	nrows = (int) SPI_processed;
	batch->more = (nrows == RELAY_BATCH);

	items = palloc(Max(nrows, 1) * sizeof(InboxItem));
	tids = palloc(Max(nrows, 1) * sizeof(Datum));
	for (int i = 0; i < nrows; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		tid = SPI_getbinval(row, desc, 1, &isnull);
		int64		id = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		char	   *channel = TextDatumGetCString(SPI_getbinval(row, desc, 3, &isnull));
		Datum		event = SPI_getbinval(row, desc, 4, &isnull);
		Datum		notify = SPI_getbinval(row, desc, 5, &isnull);
		bool		routed = routes_for_channel(routes, channel) != NULL;

		if (routed)
		{
			Size		len = toast_raw_datum_size(event) - VARHDRSZ;

			/* the batch is full: this row is the first of the next one */
			if (bytes > 0 && bytes + len > (Size) notifier_max_batch_bytes)
			{
				batch->more = true;
				break;
			}
			bytes += len;
		}
		note_seen(id, horizon);
		batch->cursor = id;
		if (routed)
		{
			items[nitems].channel = channel;
			items[nitems].payload = TextDatumGetCString(event);
			items[nitems].src_pid = 0;
			nitems++;
		}
		if (!isnull)
			send_notify(channel, TextDatumGetCString(notify));
		if (routed || !isnull)
			tids[ntids++] = tid;
	}

	deltas = forward_write(routes, items, nitems, GetCurrentTimestamp(), keep_cxt, retry);
	if (*retry != NULL)
		return deltas;

	if (ntids > 0)
	{
		ArrayType  *array = construct_array(tids, ntids, TIDOID,
											sizeof(ItemPointerData), false,
											TYPALIGN_SHORT);

		keep_plan(&delete_plan,
				  "DELETE FROM notifier.outbox WHERE ctid OPERATOR(pg_catalog.=) ANY($1)",
				  1, delete_argtypes);
		args[0] = PointerGetDatum(array);
		if (SPI_execute_plan(delete_plan, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "deleting from notifier.outbox failed");
		deleted_since_vacuum += SPI_processed;
	}

	/* the gaps in what this snapshot read, up to the end if it read all */
	expire_gaps(first, batch->more ? batch->cursor : PG_INT64_MAX, xmin);
	return deltas;
}

/*
 * Move what the outbox holds to the routes.  Outside a transaction.  When
 * a batch fails (a transient error of a route), its rows stay in the
 * outbox, the relay stops, and backoff says when to try again: from the
 * lowest id, as what was read of the failed batch is forgotten.
 */
void
outbox_relay(RouteTable *routes, Backoff *backoff)
{
	MemoryContext old;
	RelayBatch	batch;

	if (routes == NULL)
		return;
	if (relay_cxt == NULL)
	{
		relay_cxt = AllocSetContextCreate(TopMemoryContext, "pg_notifier outbox relay",
										  ALLOCSET_SMALL_SIZES);
		batch_cxt = AllocSetContextCreate(relay_cxt, "pg_notifier outbox batch",
										  ALLOCSET_DEFAULT_SIZES);
	}

	old = MemoryContextSwitchTo(batch_cxt);
	batch.routes = routes;
	batch.cursor = ngaps > 0 ? gaps[0].lo - 1 : seen_hi;
	for (;;)
	{
		bool		done;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		batch.more = false;		/* stays so when the extension is gone */
		done = forward_xact(relay_batch, &batch, routes, backoff, "moving outbox events");
		MemoryContextReset(batch_cxt);
		if (!done)
		{
			outbox_relay_reset();
			break;
		}
		if (!batch.more)
			break;
	}
	MemoryContextSwitchTo(old);
}

/*
 * VACUUM the outbox when OUTBOX_VACUUM_ROWS rows were deleted since the
 * last time, at most every OUTBOX_VACUUM_MS: under a sustained load the
 * outbox then holds the dead rows of a few seconds, not of an
 * autovacuum_naptime.  SKIP_LOCKED: when autovacuum is at it already,
 * nothing is done.  Outside a transaction; VACUUM makes its own.
 */
void
outbox_vacuum(void)
{
	TimestampTz now = GetCurrentTimestamp();
	VacuumStmt *stmt;

	if (deleted_since_vacuum < OUTBOX_VACUUM_ROWS ||
		now < TimestampTzPlusMilliseconds(last_vacuum, OUTBOX_VACUUM_MS))
		return;
	deleted_since_vacuum = 0;
	last_vacuum = now;
	pgstat_report_activity(STATE_RUNNING, "vacuuming notifier.outbox");

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!worker_xact_lock_extension())
	{
		CommitTransactionCommand(); /* the extension is gone */
		pgstat_report_activity(STATE_IDLE, NULL);
		return;
	}
	stmt = makeNode(VacuumStmt);
	stmt->options = list_make1(makeDefElem("skip_locked", NULL, -1));
	stmt->rels = list_make1(makeVacuumRelation(makeRangeVar(NOTIFIER_SCHEMA, "outbox", -1),
											   InvalidOid, NIL));
	stmt->is_vacuumcmd = true;
	ExecVacuum(make_parsestate(NULL), stmt, true);
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}
