/*-------------------------------------------------------------------------
 *
 * prune.c
 *	  Deleting old rows of the extension's tables (notifier.payloads,
 *	  delivered rows of notifier.deliveries), in small batches.
 *
 * PRUNE_BATCH rows per transaction, so that no transaction holds many row
 * locks or makes a long WAL burst, and vacuum can keep up.  The worker
 * calls this at top level, outside any transaction, and only when there
 * may be something to delete (see worker.c).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker/prune.h"
#include "worker/worker_xact.h"

#define PRUNE_BATCH 1000

/*
 * Delete the rows of notifier.<table> matching condition whose time_column
 * is older than retention_secs.  Returns the time_column of the oldest row
 * left (matching condition), 0 when none is.
 */
TimestampTz
prune_table(const char *table, const char *time_column, const char *condition,
			int retention_secs)
{
	char	   *delete_sql;
	char	   *oldest_sql;
	TimestampTz oldest = 0;
	uint64		deleted;

	delete_sql = psprintf("DELETE FROM notifier.%s WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY("
						  "SELECT id FROM notifier.%s WHERE %s"
						  " AND %s OPERATOR(pg_catalog.<) (pg_catalog.now()"
						  " OPERATOR(pg_catalog.-) interval '%d seconds')"
						  " ORDER BY %s LIMIT %d))",
						  table, table, condition, time_column, retention_secs,
						  time_column, PRUNE_BATCH);
	oldest_sql = psprintf("SELECT pg_catalog.min(%s) FROM notifier.%s WHERE %s",
						  time_column, table, condition);
	do
	{
		CHECK_FOR_INTERRUPTS();
		if (!worker_xact_begin())
		{
			worker_xact_commit();	/* the extension is gone */
			break;
		}
		if (SPI_execute(delete_sql, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "pruning notifier.%s failed", table);
		deleted = SPI_processed;
		if (deleted < PRUNE_BATCH)
		{
			bool		isnull;
			Datum		d;

			if (SPI_execute(oldest_sql, true, 1) != SPI_OK_SELECT)
				elog(ERROR, "reading notifier.%s failed", table);
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			oldest = isnull ? 0 : DatumGetTimestampTz(d);
		}
		worker_xact_commit();
	} while (deleted == PRUNE_BATCH);

	pfree(delete_sql);
	pfree(oldest_sql);
	return oldest;
}
