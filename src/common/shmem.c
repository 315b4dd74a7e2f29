/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  pg_notifier's shared memory: reserving it when the library is in
 *	  shared_preload_libraries, and handing each part its piece.
 *
 * Three parts live there, each in its own file: the worker registry
 * (worker_registry.c: which databases have a worker, and its state), the
 * worker wake-up (worker_wake.c: how a committing backend sets the latch
 * of its database's worker) and the counters (stats.c).  This file only
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

#include "common/shmem.h"
#include "common/stats.h"
#include "common/worker_registry.h"
#include "common/worker_wake.h"

#define TRANCHE_NAME "pg_notifier"

static LWLock *lock = NULL;		/* NULL: no segment */

static const ShmemPart *const parts[] = {
	&registry_shmem,
	&worker_wake_shmem,
	&stats_shmem,
};

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
notifier_shmem_request(void)
{
	Size		size = 0;

#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif

	for (int i = 0; i < lengthof(parts); i++)
		size = add_size(size, parts[i]->size);
	RequestAddinShmemSpace(size);
	RequestNamedLWLockTranche(TRANCHE_NAME, 1);
}

static void
notifier_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	lock = &(GetNamedLWLockTranche(TRANCHE_NAME))->lock;
	for (int i = 0; i < lengthof(parts); i++)
	{
		bool		found;
		void	   *mem = ShmemInitStruct(parts[i]->name, parts[i]->size, &found);

		if (!found)
			memset(mem, 0, parts[i]->size);
		parts[i]->attach(mem, found);
	}
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
