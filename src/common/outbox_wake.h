/*-------------------------------------------------------------------------
 *
 * outbox_wake.h
 *	  How a transaction that wrote outbox events wakes its database's
 *	  worker at commit, without a lock.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_OUTBOX_WAKE_H
#define NOTIFIER_OUTBOX_WAKE_H

#include "common/shmem.h"

extern const ShmemPart outbox_wake_shmem;

/* a committing writer */
extern void outbox_wake(Oid dboid);

/* the worker of a database */
extern void outbox_wake_arm(int slotno);
extern bool outbox_wake_take(void);

#endif							/* NOTIFIER_OUTBOX_WAKE_H */
