/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  The shared-memory state of pg_notifier: capture counters, the state
 *	  of each database's worker and the counters of each route.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_STATS_H
#define NOTIFIER_STATS_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

typedef enum CaptureCounter
{
	COUNT_EVENTS_SENT,			/* events handed to NOTIFY */
	COUNT_OVERSIZE_REFERENCED,	/* sent as a reference to notifier.payloads */
	COUNT_OVERSIZE_KEYS,		/* sent as the key-only envelope */
	COUNT_OVERSIZE_SKIPPED,		/* dropped by on_oversize = skip */
	COUNT_NOOP_UPDATES,			/* updates that changed no watched column */
	COUNT_OUTBOX_WRITTEN,		/* events written to notifier.outbox */
	NUM_CAPTURE_COUNTERS
} CaptureCounter;

/* what the worker of a database is doing; see worker_state_name() */
typedef enum WorkerState
{
	WORKER_STOPPED,				/* not running (yet, or any more) */
	WORKER_STARTING,			/* registered, not yet connected */
	WORKER_DATABASE_MISSING,	/* the database does not exist */
	WORKER_ROLE_MISSING,		/* pg_notifier.role names no login role */
	WORKER_WAITING,				/* the extension is not installed */
	WORKER_LISTENING,			/* idle, listening to its channels */
	WORKER_FORWARDING			/* writing events to routes */
} WorkerState;

/* what one drain did for one route */
typedef struct RouteDelta
{
	int64		route_id;
	int64		received;		/* events routed to it */
	int64		written;		/* of those, written to its sink */
	int64		errors;			/* of those, lost to an error */
	const char *error;			/* the error, or NULL */
} RouteDelta;

/* what one finished webhook request did for its route */
typedef struct RouteDelivery
{
	int64		route_id;
	int64		delivered;		/* rows now delivered */
	int64		retried;		/* rows to be tried again */
	int64		dead;			/* rows now dead */
	int			http_status;	/* 0: no response */
	const char *error;			/* NULL when delivered */
	const double *latencies_ms; /* receipt to 2xx, per delivered row */
	int			nlatencies;
} RouteDelivery;

extern void stats_request_shmem(void);
extern void stats_count(CaptureCounter counter);
extern uint64 stats_read(CaptureCounter counter);

/* the launcher: which databases have a worker, and their state */
extern void stats_databases_configure(List *dbnames);
extern void stats_database_state(const char *dbname, WorkerState state);

/* outbox: a committing backend wakes its database's worker */
extern void stats_outbox_wake(Oid dboid);

/* a worker: its own slot */
extern void stats_worker_attach(const char *dbname);
extern void stats_worker_state(WorkerState state);
extern void stats_worker_channels(List *channels);
extern void stats_worker_error(const char *message);
extern void stats_worker_wakeable(void);
extern bool stats_worker_take_wake(void);

/* a worker: its routes */
extern void stats_routes_retain(Oid dboid, const int64 *route_ids, int nroutes);
extern void stats_routes_update(Oid dboid, const RouteDelta *deltas, int ndeltas,
								TimestampTz when);
extern void stats_route_delivery(Oid dboid, const RouteDelivery *rd, TimestampTz when);

#endif							/* NOTIFIER_STATS_H */
