/*-------------------------------------------------------------------------
 *
 * worker_registry.h
 *	  Which databases have a worker, and what each worker is doing.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WORKER_REGISTRY_H
#define NOTIFIER_WORKER_REGISTRY_H

#include "common/shmem.h"
#include "nodes/pg_list.h"

/* what the worker of a database is doing; see worker_state_name() */
typedef enum WorkerState
{
	WORKER_STOPPED,				/* not running (yet, or any more) */
	WORKER_STARTING,			/* registered, not yet connected */
	WORKER_DATABASE_MISSING,	/* the database does not exist */
	WORKER_ROLE_MISSING,		/* pg_notifier.role names no login role */
	WORKER_WAITING,				/* the extension is not installed */
	WORKER_LISTENING,			/* idle, listening to its channels */
	WORKER_FORWARDING,			/* writing events to routes */
	WORKER_NO_EXTENSION			/* exited: pg_notifier.databases = '*' and the
								 * database has no extension */
} WorkerState;

extern const ShmemPart registry_shmem;

/* the launcher */
extern void registry_launcher_arm(void);
extern int	registry_take_start_requests(Oid *dboids, int max, bool *rescan);
extern void registry_configure(List *dbnames);
extern void registry_database_state(const char *dbname, WorkerState state);
extern WorkerState registry_get_state(const char *dbname);

/* a committing backend: CREATE EXTENSION in its database */
extern void registry_request_start(Oid dboid);

/* a worker: its own entry */
extern int	registry_attach(const char *dbname);
extern void registry_set_state(WorkerState state);
extern void registry_set_channels(List *channels);
extern void registry_set_error(const char *message);

#endif							/* NOTIFIER_WORKER_REGISTRY_H */
