/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The shared-memory state of pg_notifier, and the SQL functions that
 *	  read it: capture counters, the state of each database's worker and
 *	  the counters of each route.
 *
 * The segment exists only when the library is in shared_preload_libraries.
 * Without it the triggers still work; counting is then skipped, and reading
 * the counters says why.  Capture counters are atomics; worker slots and
 * route counters are short copies under one LWLock.  Everything here is
 * reset by a server restart.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pg_notifier.h"
#include "common/stats.h"

#define MAX_WORKER_SLOTS NOTIFIER_MAX_DATABASES
#define MAX_ROUTE_SLOTS 1024
#define ERROR_LEN 256
#define CHANNELS_LEN 1024
#define LATENCY_SAMPLES 256		/* latencies kept per route */

typedef struct WorkerSlot
{
	bool		in_use;
	char		dbname[NAMEDATALEN];
	int			pid;
	WorkerState state;
	TimestampTz started_at;
	int			nchannels;		/* channels listened to */
	int			nshown;			/* of those, stored in channels[] */
	char		channels[CHANNELS_LEN]; /* NUL-terminated, one after another */
	char		last_error[ERROR_LEN];
	TimestampTz last_error_at;
} WorkerSlot;

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
} RouteSlot;

/*
 * How a committing backend wakes the worker of its database (outbox mode)
 * without taking a lock: lock-free, because it happens in a commit
 * callback.  wake[i] belongs to the worker of workers[i].  A stale procno
 * (the worker just exited) costs only a spurious wake-up of whichever
 * process has that PGPROC now.
 */
typedef struct WakeSlot
{
	pg_atomic_uint32 dboid;		/* the worker's database; 0: no worker */
	pg_atomic_uint32 procno;	/* its PGPROC number + 1; 0: none */
	pg_atomic_uint32 pending;	/* 1: outbox events committed since it looked */
} WakeSlot;

typedef struct NotifierShared
{
	pg_atomic_uint64 capture[NUM_CAPTURE_COUNTERS];
	WakeSlot	wake[MAX_WORKER_SLOTS];
	LWLock	   *lock;			/* protects workers[] and routes[] */
	WorkerSlot	workers[MAX_WORKER_SLOTS];
	RouteSlot	routes[MAX_ROUTE_SLOTS];
} NotifierShared;

static NotifierShared *shared = NULL;
static WorkerSlot *my_slot = NULL;	/* a worker's own slot */
static WakeSlot *my_wake = NULL;	/* and its wake-up */

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
stats_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(NotifierShared)));
	RequestNamedLWLockTranche("pg_notifier", 1);
}

static void
stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("pg_notifier", sizeof(NotifierShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(NotifierShared));
		for (int i = 0; i < NUM_CAPTURE_COUNTERS; i++)
			pg_atomic_init_u64(&shared->capture[i], 0);
		for (int i = 0; i < MAX_WORKER_SLOTS; i++)
		{
			pg_atomic_init_u32(&shared->wake[i].dboid, InvalidOid);
			pg_atomic_init_u32(&shared->wake[i].procno, 0);
			pg_atomic_init_u32(&shared->wake[i].pending, 0);
		}
		shared->lock = &(GetNamedLWLockTranche("pg_notifier"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init() while shared_preload_libraries is processed.
 */
void
stats_request_shmem(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
#else
	stats_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

static void
require_shared(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_notifier is not loaded through shared_preload_libraries"),
				 errhint("Add pg_notifier to shared_preload_libraries and restart the server.")));
}

void
stats_count(CaptureCounter counter)
{
	if (shared != NULL)
		pg_atomic_fetch_add_u64(&shared->capture[counter], 1);
}

uint64
stats_read(CaptureCounter counter)
{
	return shared != NULL ? pg_atomic_read_u64(&shared->capture[counter]) : 0;
}

/* Caller holds the lock. */
static WorkerSlot *
find_worker_slot(const char *dbname)
{
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
	{
		WorkerSlot *slot = &shared->workers[i];

		if (slot->in_use && strcmp(slot->dbname, dbname) == 0)
			return slot;
	}
	return NULL;
}

/*
 * The launcher: the databases of pg_notifier.databases get a slot (in the
 * order given), the slots of others are freed.  Names past the number of
 * slots were refused when the GUC was set.
 */
void
stats_databases_configure(List *dbnames)
{
	ListCell   *lc;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
	{
		WorkerSlot *slot = &shared->workers[i];
		bool		keep = false;

		foreach(lc, dbnames)
			keep |= slot->in_use && strcmp(slot->dbname, lfirst(lc)) == 0;
		if (!keep)
			slot->in_use = false;
	}
	foreach(lc, dbnames)
	{
		const char *dbname = lfirst(lc);

		if (find_worker_slot(dbname) != NULL)
			continue;
		for (int i = 0; i < MAX_WORKER_SLOTS; i++)
		{
			WorkerSlot *slot = &shared->workers[i];

			if (slot->in_use)
				continue;
			memset(slot, 0, sizeof(WorkerSlot));
			slot->in_use = true;
			strlcpy(slot->dbname, dbname, NAMEDATALEN);
			slot->state = WORKER_STOPPED;
			break;
		}
	}
	LWLockRelease(shared->lock);
}

void
stats_database_state(const char *dbname, WorkerState state)
{
	WorkerSlot *slot;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = find_worker_slot(dbname);
	if (slot != NULL && slot->pid == 0)
		slot->state = state;
	LWLockRelease(shared->lock);
}

static void
worker_detach(int code, Datum arg)
{
	if (my_wake != NULL)
	{
		pg_atomic_write_u32(&my_wake->procno, 0);
		pg_atomic_write_u32(&my_wake->dboid, InvalidOid);
		my_wake = NULL;
	}
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (my_slot->in_use && my_slot->pid == MyProcPid)
	{
		my_slot->pid = 0;
		my_slot->state = WORKER_STOPPED;
		my_slot->nchannels = my_slot->nshown = 0;
	}
	LWLockRelease(shared->lock);
	my_slot = NULL;
}

/*
 * A worker takes the slot the launcher made for its database.
 */
void
stats_worker_attach(const char *dbname)
{
	require_shared();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot = find_worker_slot(dbname);
	if (my_slot != NULL)
	{
		my_slot->pid = MyProcPid;
		my_slot->state = WORKER_STARTING;
		my_slot->started_at = GetCurrentTimestamp();
		my_slot->nchannels = my_slot->nshown = 0;
	}
	LWLockRelease(shared->lock);
	if (my_slot == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_notifier: database \"%s\" is no longer in pg_notifier.databases",
						dbname)));
	on_shmem_exit(worker_detach, (Datum) 0);
}

/*
 * A connected worker: from now on committing outbox writers of its
 * database set its latch.  The caller looks at the outbox after this.
 */
void
stats_worker_wakeable(void)
{
	if (my_slot == NULL)
		return;
	my_wake = &shared->wake[my_slot - shared->workers];
	pg_atomic_write_u32(&my_wake->pending, 0);
#if PG_VERSION_NUM >= 170000
	pg_atomic_write_u32(&my_wake->procno, MyProcNumber + 1);
#else
	pg_atomic_write_u32(&my_wake->procno, MyProc->pgprocno + 1);
#endif
	pg_atomic_write_u32(&my_wake->dboid, MyDatabaseId);
	pg_memory_barrier();
}

/* Were outbox events committed since the last call? */
bool
stats_worker_take_wake(void)
{
	return my_wake != NULL && pg_atomic_exchange_u32(&my_wake->pending, 0) != 0;
}

/*
 * A transaction that wrote outbox events committed: wake the worker of
 * its database, if there is one.  Called from a commit callback: takes no
 * lock and cannot fail.
 */
void
stats_outbox_wake(Oid dboid)
{
	if (shared == NULL)
		return;
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
	{
		WakeSlot   *wake = &shared->wake[i];
		uint32		procno;

		if (pg_atomic_read_u32(&wake->dboid) != dboid)
			continue;
		pg_atomic_write_u32(&wake->pending, 1);
		pg_memory_barrier();
		procno = pg_atomic_read_u32(&wake->procno);
		if (procno != 0)
			SetLatch(&GetPGProcByNumber(procno - 1)->procLatch);
	}
}

void
stats_worker_state(WorkerState state)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->state = state;
	LWLockRelease(shared->lock);
}

/* channels: the (char *) names the worker listens to, sorted */
void
stats_worker_channels(List *channels)
{
	ListCell   *lc;
	int			used = 0;

	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->nchannels = list_length(channels);
	my_slot->nshown = 0;
	foreach(lc, channels)
	{
		int			len = strlen(lfirst(lc)) + 1;

		if (used + len > CHANNELS_LEN)
			break;
		memcpy(my_slot->channels + used, lfirst(lc), len);
		used += len;
		my_slot->nshown++;
	}
	LWLockRelease(shared->lock);
}

void
stats_worker_error(const char *message)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	strlcpy(my_slot->last_error, message, ERROR_LEN);
	my_slot->last_error_at = GetCurrentTimestamp();
	LWLockRelease(shared->lock);
}

/* Caller holds the lock exclusively; NULL when every slot is taken. */
static RouteSlot *
route_slot(Oid dboid, int64 route_id, bool create)
{
	RouteSlot  *free_slot = NULL;

	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
	{
		RouteSlot  *slot = &shared->routes[i];

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
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
	{
		RouteSlot  *slot = &shared->routes[i];
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
	LWLockRelease(shared->lock);
}

void
stats_routes_update(Oid dboid, const RouteDelta *deltas, int ndeltas,
					TimestampTz when)
{
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ndeltas; i++)
	{
		const RouteDelta *d = &deltas[i];
		RouteSlot  *slot = route_slot(dboid, d->route_id, true);

		if (slot == NULL || d->received == 0)
			continue;
		slot->received += d->received;
		slot->written += d->written;
		slot->errors += d->errors;
		slot->last_event_at = when;
		if (d->error != NULL)
		{
			strlcpy(slot->last_error, d->error, ERROR_LEN);
			slot->last_error_at = when;
		}
	}
	LWLockRelease(shared->lock);
}

void
stats_route_delivery(Oid dboid, const RouteDelivery *rd, TimestampTz when)
{
	RouteSlot  *slot;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
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
			strlcpy(slot->last_error, rd->error, ERROR_LEN);
			slot->last_error_at = when;
		}
		for (int i = 0; i < rd->nlatencies; i++)
		{
			slot->latencies_ms[slot->next_latency] = (float4) rd->latencies_ms[i];
			slot->next_latency = (slot->next_latency + 1) % LATENCY_SAMPLES;
			slot->nlatencies = Min(slot->nlatencies + 1, LATENCY_SAMPLES);
		}
	}
	LWLockRelease(shared->lock);
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

static const char *
worker_state_name(WorkerState state)
{
	switch (state)
	{
		case WORKER_STOPPED:
			return "stopped";
		case WORKER_STARTING:
			return "starting";
		case WORKER_DATABASE_MISSING:
			return "database missing";
		case WORKER_ROLE_MISSING:
			return "role missing";
		case WORKER_WAITING:
			return "waiting for extension";
		case WORKER_LISTENING:
			return "listening";
		case WORKER_FORWARDING:
			return "forwarding";
	}
	return "unknown";
}

/* A set-returning function's tuplestore, filled in one go. */
static TupleDesc
materialize_result(FunctionCallInfo fcinfo, Tuplestorestate **store)
{
#if PG_VERSION_NUM >= 150000
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	*store = rsinfo->setResult;
	return rsinfo->setDesc;
#else
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	tupdesc;
	MemoryContext old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);
	*store = rsinfo->setResult;
	return rsinfo->setDesc;
#endif
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

	require_shared();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	for (int i = 0; i < NUM_CAPTURE_COUNTERS; i++)
		values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&shared->capture[i]));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

static Datum
channels_array(const WorkerSlot *slot)
{
	Datum	   *items = palloc((slot->nshown + 1) * sizeof(Datum));
	const char *p = slot->channels;
	int			n = 0;

	for (; n < slot->nshown; n++)
	{
		items[n] = CStringGetTextDatum(p);
		p += strlen(p) + 1;
	}
	if (slot->nshown < slot->nchannels)
		items[n++] = CStringGetTextDatum(psprintf("... %d more",
												  slot->nchannels - slot->nshown));
	return PointerGetDatum(construct_array(items, n, TEXTOID, -1, false, TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(notifier_status);

/*
 * notifier.status(): one row per database with a worker slot.
 */
Datum
notifier_status(PG_FUNCTION_ARGS)
{
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	WorkerSlot *copy;
	int			n = 0;
	Datum		usage;

	require_shared();
	tupdesc = materialize_result(fcinfo, &store);
	usage = OidFunctionCall0(F_PG_NOTIFICATION_QUEUE_USAGE);

	copy = palloc(sizeof(WorkerSlot) * MAX_WORKER_SLOTS);
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
		if (shared->workers[i].in_use)
			copy[n++] = shared->workers[i];
	LWLockRelease(shared->lock);

	for (int i = 0; i < n; i++)
	{
		WorkerSlot *slot = &copy[i];
		Datum		values[8];
		bool		nulls[8] = {0};

		values[0] = CStringGetDatum(slot->dbname);
		values[1] = Int32GetDatum(slot->pid);
		nulls[1] = (slot->pid == 0);
		values[2] = CStringGetTextDatum(worker_state_name(slot->state));
		values[3] = TimestampTzGetDatum(slot->started_at);
		nulls[3] = (slot->pid == 0);
		values[4] = channels_array(slot);
		values[5] = CStringGetTextDatum(slot->last_error);
		nulls[5] = (slot->last_error_at == 0);
		values[6] = TimestampTzGetDatum(slot->last_error_at);
		nulls[6] = (slot->last_error_at == 0);
		values[7] = usage;
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
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

	require_shared();
	tupdesc = materialize_result(fcinfo, &store);

	copy = palloc(sizeof(RouteSlot) * MAX_ROUTE_SLOTS);
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < MAX_ROUTE_SLOTS; i++)
		if (shared->routes[i].in_use && shared->routes[i].dboid == MyDatabaseId)
			copy[n++] = shared->routes[i];
	LWLockRelease(shared->lock);

	for (int i = 0; i < n; i++)
	{
		RouteSlot  *slot = &copy[i];
		Datum		values[13];
		bool		nulls[13] = {0};

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
		tuplestore_putvalues(store, tupdesc, values, nulls);
	}
	return (Datum) 0;
}
