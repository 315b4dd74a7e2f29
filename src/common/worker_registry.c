/*-------------------------------------------------------------------------
 *
 * worker_registry.c
 *	  The worker registry in shared memory: one entry per database of
 *	  pg_notifier.databases, with the state of its worker, and the SQL
 *	  function notifier.status() that shows it.
 *
 * The launcher owns the set of entries (registry_configure()) and records
 * why a database has no worker yet; each worker takes its database's entry
 * when it starts and gives it back when it exits, saying why if it exited
 * because its database has no extension.  Entries are short copies under
 * the shared lock (shmem.c); they are reset by a server restart.
 *
 * A committing CREATE EXTENSION asks the launcher to start its database's
 * worker at once (registry_request_start()): from a commit callback, so
 * lock-free -- a few atomic request slots and the launcher's latch.  When
 * the slots are full the launcher is asked to look at every database.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/timestamp.h"

#include "common/shmem.h"
#include "common/sqlutil.h"
#include "common/worker_registry.h"
#include "pg_notifier.h"

#define MAX_WORKER_SLOTS NOTIFIER_MAX_DATABASES
#define MAX_START_REQUESTS 16
#define ERROR_LEN 256
#define CHANNELS_LEN 1024

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

/* what committing backends ask of the launcher */
typedef struct LauncherRequests
{
	pg_atomic_uint32 procno;	/* the launcher's PGPROC number + 1; 0: none */
	pg_atomic_uint32 rescan;	/* 1: look at every database */
	pg_atomic_uint32 start[MAX_START_REQUESTS]; /* databases; 0: free */
} LauncherRequests;

typedef struct Registry
{
	LauncherRequests requests;
	WorkerSlot	slots[MAX_WORKER_SLOTS];
} Registry;

static Registry *registry = NULL;	/* NULL: no segment */
static WorkerSlot *slots = NULL;	/* registry->slots */
static WorkerSlot *my_slot = NULL;	/* a worker's own entry */

static void
registry_attach_shmem(void *mem, bool found)
{
	registry = mem;
	slots = registry->slots;
	if (found)
		return;
	pg_atomic_init_u32(&registry->requests.procno, 0);
	pg_atomic_init_u32(&registry->requests.rescan, 0);
	for (int i = 0; i < MAX_START_REQUESTS; i++)
		pg_atomic_init_u32(&registry->requests.start[i], InvalidOid);
}

const ShmemPart registry_shmem = {
	"pg_notifier worker registry",
	sizeof(Registry),
	registry_attach_shmem
};

static void
registry_launcher_disarm(int code, Datum arg)
{
	pg_atomic_write_u32(&registry->requests.procno, 0);
}

/* The launcher: from now on CREATE EXTENSION sets its latch. */
void
registry_launcher_arm(void)
{
	if (registry == NULL)
		return;
#if PG_VERSION_NUM >= 170000
	pg_atomic_write_u32(&registry->requests.procno, MyProcNumber + 1);
#else
	pg_atomic_write_u32(&registry->requests.procno, MyProc->pgprocno + 1);
#endif
	on_shmem_exit(registry_launcher_disarm, (Datum) 0);
}

/*
 * CREATE EXTENSION committed in database dboid: ask the launcher to start
 * its worker now.  Called from a commit callback: takes no lock and cannot
 * fail.
 */
void
registry_request_start(Oid dboid)
{
	LauncherRequests *req;
	uint32		procno;
	int			i;

	if (registry == NULL)
		return;
	req = &registry->requests;
	for (i = 0; i < MAX_START_REQUESTS; i++)
	{
		uint32		expected = InvalidOid;

		if (pg_atomic_read_u32(&req->start[i]) == dboid ||
			pg_atomic_compare_exchange_u32(&req->start[i], &expected, dboid))
			break;
	}
	if (i == MAX_START_REQUESTS)
		pg_atomic_write_u32(&req->rescan, 1);
	pg_memory_barrier();
	procno = pg_atomic_read_u32(&req->procno);
	if (procno != 0)
		SetLatch(&GetPGProcByNumber(procno - 1)->procLatch);
}

/*
 * The launcher: take the databases whose worker was asked for (at most
 * max), and whether to look at every database.
 */
int
registry_take_start_requests(Oid *dboids, int max, bool *rescan)
{
	int			n = 0;

	*rescan = false;
	if (registry == NULL)
		return 0;
	*rescan = pg_atomic_exchange_u32(&registry->requests.rescan, 0) != 0;
	for (int i = 0; i < MAX_START_REQUESTS; i++)
	{
		Oid			dboid = pg_atomic_exchange_u32(&registry->requests.start[i], InvalidOid);

		if (dboid == InvalidOid)
			continue;
		if (n < max)
			dboids[n++] = dboid;
		else
			*rescan = true;
	}
	return n;
}

/* Caller holds the lock. */
static WorkerSlot *
find_slot(const char *dbname)
{
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
	{
		WorkerSlot *slot = &slots[i];

		if (slot->in_use && strcmp(slot->dbname, dbname) == 0)
			return slot;
	}
	return NULL;
}

/*
 * The launcher: the databases of pg_notifier.databases get an entry (in
 * the order given), the entries of others are freed.  Names past the
 * number of entries were refused when the GUC was set.
 */
void
registry_configure(List *dbnames)
{
	ListCell   *lc;

	if (slots == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
	{
		WorkerSlot *slot = &slots[i];
		bool		keep = false;

		foreach(lc, dbnames)
		{
			keep |= slot->in_use && strcmp(slot->dbname, lfirst(lc)) == 0;
		}
		if (!keep)
			slot->in_use = false;
	}
	foreach(lc, dbnames)
	{
		const char *dbname = lfirst(lc);

		if (find_slot(dbname) != NULL)
			continue;
		for (int i = 0; i < MAX_WORKER_SLOTS; i++)
		{
			WorkerSlot *slot = &slots[i];

			if (slot->in_use)
				continue;
			memset(slot, 0, sizeof(WorkerSlot));
			slot->in_use = true;
			strlcpy(slot->dbname, dbname, NAMEDATALEN);
			slot->state = WORKER_STOPPED;
			break;
		}
	}
	LWLockRelease(shmem_lock());
}

/* The launcher: why a database has no worker (it has no pid). */
void
registry_database_state(const char *dbname, WorkerState state)
{
	WorkerSlot *slot;

	if (slots == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	slot = find_slot(dbname);
	if (slot != NULL && slot->pid == 0)
		slot->state = state;
	LWLockRelease(shmem_lock());
}

/* The launcher: the state of a database's entry (WORKER_STOPPED: none). */
WorkerState
registry_get_state(const char *dbname)
{
	WorkerSlot *slot;
	WorkerState state = WORKER_STOPPED;

	if (slots == NULL)
		return state;
	LWLockAcquire(shmem_lock(), LW_SHARED);
	slot = find_slot(dbname);
	if (slot != NULL)
		state = slot->state;
	LWLockRelease(shmem_lock());
	return state;
}

static void
registry_detach(int code, Datum arg)
{
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	if (my_slot->in_use && my_slot->pid == MyProcPid)
	{
		my_slot->pid = 0;
		/* why it exited, for the launcher; else stopped */
		if (my_slot->state != WORKER_NO_EXTENSION)
			my_slot->state = WORKER_STOPPED;
		my_slot->nchannels = my_slot->nshown = 0;
	}
	LWLockRelease(shmem_lock());
	my_slot = NULL;
}

/*
 * A worker takes the entry the launcher made for its database; returns its
 * number (the outbox wake-up has one slot per entry).
 */
int
registry_attach(const char *dbname)
{
	shmem_require();
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	my_slot = find_slot(dbname);
	if (my_slot != NULL)
	{
		my_slot->pid = MyProcPid;
		my_slot->state = WORKER_STARTING;
		my_slot->started_at = GetCurrentTimestamp();
		my_slot->nchannels = my_slot->nshown = 0;
	}
	LWLockRelease(shmem_lock());
	if (my_slot == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("database \"%s\" is no longer in pg_notifier.databases",
						dbname)));
	on_shmem_exit(registry_detach, (Datum) 0);
	return my_slot - slots;
}

void
registry_set_state(WorkerState state)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	my_slot->state = state;
	LWLockRelease(shmem_lock());
}

/* channels: the (char *) names the worker listens to, sorted */
void
registry_set_channels(List *channels)
{
	ListCell   *lc;
	int			used = 0;

	if (my_slot == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
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
	LWLockRelease(shmem_lock());
}

void
registry_set_error(const char *message)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(shmem_lock(), LW_EXCLUSIVE);
	clip_copy(my_slot->last_error, message, ERROR_LEN);
	my_slot->last_error_at = GetCurrentTimestamp();
	LWLockRelease(shmem_lock());
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
		case WORKER_NO_EXTENSION:
			return "no extension";
	}
	return "unknown";
}

static Datum
channels_array(const WorkerSlot *slot)
{
	List	   *names = NIL;
	const char *p = slot->channels;

	for (int n = 0; n < slot->nshown; n++)
	{
		names = lappend(names, (char *) p);
		p += strlen(p) + 1;
	}
	if (slot->nshown < slot->nchannels)
		names = lappend(names, psprintf("... %d more",
										slot->nchannels - slot->nshown));
	return list_to_text_array(names);
}

PG_FUNCTION_INFO_V1(notifier_status);

/*
 * notifier.status(): one row per database with an entry.
 */
Datum
notifier_status(PG_FUNCTION_ARGS)
{
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	WorkerSlot *copy;
	int			n = 0;
	Datum		usage;

	shmem_require();
	tupdesc = materialize_srf(fcinfo, &store);
	usage = OidFunctionCall0(F_PG_NOTIFICATION_QUEUE_USAGE);

	copy = palloc(sizeof(WorkerSlot) * MAX_WORKER_SLOTS);
	LWLockAcquire(shmem_lock(), LW_SHARED);
	for (int i = 0; i < MAX_WORKER_SLOTS; i++)
	{
		if (slots[i].in_use)
			copy[n++] = slots[i];
	}
	LWLockRelease(shmem_lock());

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
