/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  pg_notifier's shared memory: reserving it when the library is in
 *	  shared_preload_libraries, and handing each part its piece.
 *
 * Three parts live there, each in its own file: the worker registry
 * (worker_registry.c: which databases have a worker, and its state), the
 * outbox wake-up (outbox_wake.c: how a committing writer sets the latch of
 * its database's worker) and the counters (stats.c).  This file only
 * reserves their space and the one LWLock the registry and the route
 * counters share, and initialises each part once.
 *
 * Without shared_preload_libraries there is no segment: the triggers still
 * work, counting is skipped, and what needs the segment says why.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "common/outbox_wake.h"
#include "common/shmem.h"
#include "common/stats.h"
#include "common/worker_registry.h"

#define TRANCHE_NAME "pg_notifier"

static LWLock *lock = NULL;		/* NULL: no segment */

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
notifier_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(add_size(add_size(registry_shmem_size(),
											 outbox_wake_shmem_size()),
									stats_shmem_size()));
	RequestNamedLWLockTranche(TRANCHE_NAME, 1);
}

static void
notifier_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	lock = &(GetNamedLWLockTranche(TRANCHE_NAME))->lock;
	registry_shmem_init();
	outbox_wake_shmem_init();
	stats_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init() while shared_preload_libraries is processed.
 */
void
shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notifier_shmem_request;
#else
	notifier_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notifier_shmem_startup;
}

/*
 * A part's piece of the segment, zeroed the first time; caller holds
 * AddinShmemInitLock (it is a part's *_shmem_init()).
 */
void *
shmem_part(const char *name, Size size, bool *found)
{
	void	   *part = ShmemInitStruct(name, size, found);

	if (!*found)
		memset(part, 0, size);
	return part;
}

bool
shmem_available(void)
{
	return lock != NULL;
}

/* Error out, for the SQL functions that read the segment, without it. */
void
shmem_require(void)
{
	if (lock == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_notifier is not loaded through shared_preload_libraries"),
				 errhint("Add pg_notifier to shared_preload_libraries and restart the server.")));
}

/* protects the worker registry and the route counters */
LWLock *
shmem_lock(void)
{
	return lock;
}
