/*-------------------------------------------------------------------------
 *
 * worker_wake.h
 *	  Waking the worker of a database from a committing backend, without a
 *	  lock.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WORKER_WAKE_H
#define NOTIFIER_WORKER_WAKE_H

#include "common/shmem.h"

typedef enum WakeReason
{
	WAKE_OUTBOX,				/* outbox events were committed */
	WAKE_EXTENSION,				/* an extension was dropped: is it ours? */
	NUM_WAKE_REASONS
} WakeReason;

extern const ShmemPart worker_wake_shmem;

/* a committing backend */
extern void worker_wake(Oid dboid, WakeReason reason);

/* the worker of a database */
extern void worker_wake_arm(int slotno);
extern bool worker_wake_take(WakeReason reason);

#endif							/* NOTIFIER_WORKER_WAKE_H */
