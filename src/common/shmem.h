/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  pg_notifier's shared memory: one request at server start, and the
 *	  lock that guards the parts that are not atomics.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_SHMEM_H
#define NOTIFIER_SHMEM_H

#include "storage/lwlock.h"

extern void shmem_request(void);
extern bool shmem_available(void);
extern void shmem_require(void);
extern LWLock *shmem_lock(void);
extern void *shmem_part(const char *name, Size size, bool *found);

#endif							/* NOTIFIER_SHMEM_H */
