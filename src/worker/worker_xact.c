/*-------------------------------------------------------------------------
 *
 * worker_xact.c
 *	  A transaction of the worker, with an active snapshot and an SPI
 *	  connection: how every piece of the worker talks to its tables.
 *
 * A background worker has no client whose messages set the statement
 * start time, so it must set it itself: without that, now() (and so
 * next_attempt_at, pruning ages, column defaults) would be stuck at the
 * time the worker started.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "worker/worker_xact.h"

/* the memory context worker_xact_begin() was called in */
static MemoryContext caller_cxt = NULL;

void
worker_xact_begin(void)
{
	caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/*
 * Commit, and report the table statistics (rate-limited by PostgreSQL):
 * without that autovacuum would never hear of the rows the worker deleted
 * from the outbox and the queue-like tables.  Back in the caller's memory
 * context (a commit leaves TopMemoryContext current).
 */
void
worker_xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller_cxt);
	pgstat_report_stat(false);
}

/*
 * For the rest of the transaction, plan for the indexes: the worker's
 * queries on its queue-like tables (outbox, deliveries) each have an index
 * made for them, and a sequential scan -- which the planner may pick for a
 * generic plan, or before the table was first analyzed -- costs O(dead and
 * live rows) per query.  With that ruled out, planning every execution anew
 * would buy nothing.
 */
void
worker_xact_plan_for_indexes(void)
{
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Roll back the transaction worker_xact_begin() started, whatever state an
 * error left it in (SPI and the snapshot go with it).  Back in the caller's
 * memory context.
 */
void
worker_xact_abort(void)
{
	AbortCurrentTransaction();
	MemoryContextSwitchTo(caller_cxt);
}
