/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Counters in shared memory: what the triggers did, and what each
 *	  route received and delivered.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_STATS_H
#define NOTIFIER_STATS_H

#include "common/shmem.h"
#include "datatype/timestamp.h"

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

/* what one drain did for one route */
typedef struct RouteDelta
{
	int64		route_id;
	int64		received;		/* events routed to it */
	int64		written;		/* of those, written to its sink */
	int64		errors;			/* of those, lost (none since 0.2: dead
								 * letters) */
	int64		dead;			/* of those, dead letters */
	const char *error;			/* the error, or NULL */
	int64		filtered;		/* of those, left out by the route's filter */
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
	const char *connection;		/* a sink's connection state now, or NULL */
} RouteDelivery;

extern const ShmemPart stats_shmem;

/* the triggers */
extern void stats_count(CaptureCounter counter);
extern uint64 stats_read(CaptureCounter counter);

/* a worker: its routes */
extern void stats_routes_retain(Oid dboid, const int64 *route_ids, int nroutes);
extern void stats_routes_update(Oid dboid, const RouteDelta *deltas, int ndeltas,
								TimestampTz when);
extern void stats_route_delivery(Oid dboid, const RouteDelivery *rd, TimestampTz when);

#endif							/* NOTIFIER_STATS_H */
