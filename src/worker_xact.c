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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"

#include "worker_xact.h"

void
worker_xact_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
worker_xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}
