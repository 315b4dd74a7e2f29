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

/* a part of the segment: its size, and how its file finds it */
typedef struct ShmemPart
{
	const char *name;			/* its ShmemInitStruct() name */
	Size		size;
	void		(*attach) (void *mem, bool found);	/* found: set up already */
} ShmemPart;

extern void shmem_request(void);
extern bool shmem_available(void);
extern void shmem_require(void);
extern LWLock *shmem_lock(void);

#endif							/* NOTIFIER_SHMEM_H */
