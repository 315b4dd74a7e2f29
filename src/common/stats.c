/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters in shared memory, and the SQL functions that read them:
 *	  what the triggers did (notifier.capture_stats()) and what each route
 *	  received and delivered (notifier.route_stats(), behind the view
 *	  notifier.stats).
 *
 * Capture counters are atomics, bumped by every writing backend without a
 * lock.  Route counters are written by the workers after each drain or
 * delivery, as short copies under the shared lock (shmem.c); a route's
 * counters are forgotten when the route is removed.  All are reset by a
 * server restart.  Without the segment, counting is skipped and reading
 * says why.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "common/shmem.h"
#include "common/sqlutil.h"
#include "common/stats.h"

#define MAX_ROUTE_SLOTS 1024
#define ERROR_LEN 256
#define LATENCY_SAMPLES 256		/* latencies kept per route */

typedef struct RouteSlot
{
	bool		in_use;
	Oid			dboid;
	int64		route_id;
	int64		received;
	int64		written;
	int64		errors;
	TimestampTz last_event_at;
	char		last_error[ERROR_LEN];
	TimestampTz last_error_at;
	/* webhook routes */
	int64		delivered;
	int64		retried;
	int64		dead;
	int			last_http_status;	/* 0: none yet */
	int			nlatencies;		/* samples in latencies[] */
	int			next_latency;	/* where the next one goes */
	float4		latencies_ms[LATENCY_SAMPLES];
	int64		filtered;		/* left out by the route's filter */
	char		connection[16]; /* NATS routes: their connection's state */
} RouteSlot;

/* both NULL without the segment */
static pg_atomic_uint64 *capture_counters = NULL;	/* [NUM_CAPTURE_COUNTERS] */
static RouteSlot *route_slots = NULL;	/* [MAX_ROUTE_SLOTS] */

#define COUNTERS_SIZE MAXALIGN(sizeof(pg_atomic_uint64) * NUM_CAPTURE_COUNTERS)

static void
stats_attach_shmem(void *mem, bool found)
{
	capture_counters = (pg_atomic_uint64 *) mem;
	route_slots = (RouteSlot *) ((char *) mem + COUNTERS_SIZE);
	if (found)
		return;
	for (int i = 0; i < NUM_CAPTURE_COUNTERS; i++)
		pg_atomic_init_u64(&capture_counters[i], 0);
}

const ShmemPart stats_shmem = {
	"pg_notifier counters",
	COUNTERS_SIZE + MAX_ROUTE_SLOTS * sizeof(RouteSlot),
	stats_attach_shmem
};

void
stats_count(CaptureCounter counter)
{
	if (capture_counters != NULL)
		pg_atomic_fetch_add_u64(&capture_counters[counter], 1);
}

uint64
stats_read(CaptureCounter counter)
{
	return capture_counters != NULL ? pg_atomic_read_u64(&capture_counters[counter]) : 0;
}

/* Caller holds the lock exclusively; NULL when every slot is taken. */
static RouteSlot *
route_slot(Oid dboid, int64 route_id, bool create)
{
	RouteSlot  *free_slot = NULL;

	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
	{
		RouteSlot  *slot = &route_slots[i];

		if (!slot->in_use)
		{
			if (free_slot == NULL)
				free_slot = slot;
		}
		else if (slot->dboid == dboid && slot->route_id == route_id)
			return slot;
	}
	if (!create || free_slot == NULL)
		return NULL;
	memset(free_slot, 0, sizeof(RouteSlot));
	free_slot->in_use = true;
	free_slot->dboid = dboid;
	free_slot->route_id = route_id;
	return free_slot;
}

/*
 * After the routes of a database were (re)loaded: forget the counters of
 * removed routes, and give every route a slot while there are free ones.
 */
void
stats_routes_retain(Oid dboid, const int64 *route_ids, int nroutes)
{
	if (route_slots == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
	{
		RouteSlot  *slot = &route_slots[i];
		bool		keep = false;

		if (!slot->in_use || slot->dboid != dboid)
			continue;
		for (int j = 0; j < nroutes && !keep; j++)
			keep = (route_ids[j] == slot->route_id);
		if (!keep)
			slot->in_use = false;
	}
	for (int j = 0; j < nroutes; j++)
		(void) route_slot(dboid, route_ids[j], true);
	LWLockRelease(shmem_lock());
}

void
stats_routes_update(Oid dboid, const RouteDelta *deltas, int ndeltas,
					TimestampTz when)
{
	if (route_slots == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	for (int i = 0; i < ndeltas; i++)
	{
		const RouteDelta *d = &deltas[i];
		RouteSlot  *slot = route_slot(dboid, d->route_id, true);

		if (slot == NULL || d->received == 0)
			continue;
		slot->received += d->received;
		slot->written += d->written;
		slot->errors += d->errors;
		slot->dead += d->dead;
		slot->filtered += d->filtered;
		slot->last_event_at = when;
		if (d->error != NULL)
		{
			clip_copy(slot->last_error, d->error, ERROR_LEN);
			slot->last_error_at = when;
		}
	}
	LWLockRelease(shmem_lock());
}

void
stats_route_delivery(Oid dboid, const RouteDelivery *rd, TimestampTz when)
{
	RouteSlot  *slot;

	if (route_slots == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	slot = route_slot(dboid, rd->route_id, true);
	if (slot != NULL)
	{
		slot->delivered += rd->delivered;
		slot->retried += rd->retried;
		slot->dead += rd->dead;
		if (rd->http_status != 0)
			slot->last_http_status = rd->http_status;
		if (rd->error != NULL)
		{
			clip_copy(slot->last_error, rd->error, ERROR_LEN);
			slot->last_error_at = when;
		}
		if (rd->connection != NULL)
			strlcpy(slot->connection, rd->connection, sizeof(slot->connection));
		for (int i = 0; i < rd->nlatencies; i++)
		{
			slot->latencies_ms[slot->next_latency] = (float4) rd->latencies_ms[i];
			slot->next_latency = (slot->next_latency + 1) % LATENCY_SAMPLES;
			slot->nlatencies = Min(slot->nlatencies + 1, LATENCY_SAMPLES);
		}
	}
	LWLockRelease(shmem_lock());
}

static int
compare_float4(const void *a, const void *b)
{
	float4		x = *(const float4 *) a;
	float4		y = *(const float4 *) b;

	return (x > y) - (x < y);
}

/* the q-quantile (0..1) of a slot's latency samples; sorts them in place */
static double
latency_quantile(RouteSlot *slot, double q)
{
	int			i;

	qsort(slot->latencies_ms, slot->nlatencies, sizeof(float4), compare_float4);
	i = (int) ceil(q * slot->nlatencies) - 1;
	return slot->latencies_ms[Max(i, 0)];
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

	shmem_require();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	for (int i = 0; i < NUM_CAPTURE_COUNTERS; i++)
		values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&capture_counters[i]));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(notifier_route_connections);

/*
 * notifier.route_connections(): the state of the connection of each route
 * of this database that has one (NATS: connected, reconnecting,
 * disconnected, closed), as its sink last said.
 */
Datum
notifier_route_connections(PG_FUNCTION_ARGS)
{
	Tuplestorestate *store;
	TupleDesc	tupdesc;

	shmem_require();
	tupdesc = materialize_srf(fcinfo, &store);
	LWLockAcquire(shmem_lock(), LW_SHARED);
	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
	{
		RouteSlot  *slot = &route_slots[i];
		Datum		values[2];
		bool		nulls[2] = {0};

		if (!slot->in_use || slot->dboid != MyDatabaseId || slot->connection[0] == '\0')
			continue;
		values[0] = Int64GetDatum(slot->route_id);
		values[1] = CStringGetTextDatum(slot->connection);
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
	LWLockRelease(shmem_lock());
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(notifier_route_stats);

/*
 * notifier.route_stats(): the counters of the routes of this database.
 */
Datum
notifier_route_stats(PG_FUNCTION_ARGS)
{
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	RouteSlot  *copy;
	int			n = 0;

	shmem_require();
	tupdesc = materialize_srf(fcinfo, &store);

	copy = palloc(sizeof(RouteSlot) * MAX_ROUTE_SLOTS);
	LWLockAcquire(shmem_lock(), LW_SHARED);
	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
		if (route_slots[i].in_use && route_slots[i].dboid == MyDatabaseId)
			copy[n++] = route_slots[i];
	LWLockRelease(shmem_lock());

	for (int i = 0; i < n; i++)
	{
		RouteSlot  *slot = &copy[i];
		Datum		values[14];
		bool		nulls[14] = {0};

		values[0] = Int64GetDatum(slot->route_id);
		values[1] = Int64GetDatum(slot->received);
		values[2] = Int64GetDatum(slot->written);
		values[3] = Int64GetDatum(slot->errors);
		values[4] = TimestampTzGetDatum(slot->last_event_at);
		nulls[4] = (slot->last_event_at == 0);
		values[5] = CStringGetTextDatum(slot->last_error);
		nulls[5] = (slot->last_error_at == 0);
		values[6] = TimestampTzGetDatum(slot->last_error_at);
		nulls[6] = (slot->last_error_at == 0);
		values[7] = Int64GetDatum(slot->delivered);
		values[8] = Int64GetDatum(slot->retried);
		values[9] = Int64GetDatum(slot->dead);
		values[10] = Int32GetDatum(slot->last_http_status);
		nulls[10] = (slot->last_http_status == 0);
		nulls[11] = nulls[12] = (slot->nlatencies == 0);
		if (slot->nlatencies > 0)
		{
			values[11] = Float8GetDatum(latency_quantile(slot, 0.50));
			values[12] = Float8GetDatum(latency_quantile(slot, 0.99));
		}
		values[13] = Int64GetDatum(slot->filtered);
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
	return (Datum) 0;
}
