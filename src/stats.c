/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The shared-memory state of pg_notifier: capture counters, and the SQL
 *	  function that reads them.
 *
 * The segment exists only when the library is in shared_preload_libraries.
 * Without it the triggers still work; counting is then skipped, and reading
 * the counters says why.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"

#include "stats.h"

typedef struct NotifierShared
{
	pg_atomic_uint64 capture[NUM_CAPTURE_COUNTERS];
} NotifierShared;

static NotifierShared *shared = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
stats_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(NotifierShared)));
}

static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("pg_notifier", sizeof(NotifierShared), &found);
	if (!found)
	{
		for (int i = 0; i < NUM_CAPTURE_COUNTERS; i++)
			pg_atomic_init_u64(&shared->capture[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init() while shared_preload_libraries is processed.
 */
void
stats_request_shmem(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
#else
	stats_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

void
stats_count(CaptureCounter counter)
{
	if (shared != NULL)
		pg_atomic_fetch_add_u64(&shared->capture[counter], 1);
}

PG_FUNCTION_INFO_V1(notifier_capture_stats);

/*
 * notifier.capture_stats() -> (events_sent, oversize_referenced, ...)
 */
Datum
notifier_capture_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[NUM_CAPTURE_COUNTERS];
	bool		nulls[NUM_CAPTURE_COUNTERS] = {0};

	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_notifier counters are not available"),
				 errhint("Add pg_notifier to shared_preload_libraries and restart the server.")));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	for (int i = 0; i < NUM_CAPTURE_COUNTERS; i++)
		values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&shared->capture[i]));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
