/*-------------------------------------------------------------------------
 *
 * worker_wake.c
 *	  Waking the worker of a database from a committing backend: a
 *	  transaction that wrote events to notifier.outbox, or one that dropped
 *	  an extension (the worker then looks at once whether it was its own).
 *
 * The wake-up happens in a commit callback, where nothing may fail and no
 * lock should be waited for, so it is lock-free: one slot per worker
 * registry entry (worker_registry.c), holding the worker's database, its
 * PGPROC number and one flag per reason, all atomics.  A committing backend
 * sets the flag in every slot of its database and then the latch; the
 * worker clears a flag before it acts on it.  A stale PGPROC number (the
 * worker just exited) costs only a spurious wake-up of whichever process
 * has that PGPROC now.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"

#include "common/worker_wake.h"
#include "common/shmem.h"
#include "pg_notifier.h"

#define MAX_WAKE_SLOTS NOTIFIER_MAX_DATABASES

typedef struct WakeSlot
{
	pg_atomic_uint32 dboid;		/* the worker's database; 0: no worker */
	pg_atomic_uint32 procno;	/* its PGPROC number + 1; 0: none */
	pg_atomic_uint32 flags[NUM_WAKE_REASONS];	/* 1: woken for that reason */
} WakeSlot;

static WakeSlot *wake_slots = NULL; /* [MAX_WAKE_SLOTS]; NULL: no segment */
static WakeSlot *my_wake = NULL;	/* the worker's own slot */

static void
worker_wake_attach_shmem(void *mem, bool found)
{
	wake_slots = mem;
	if (found)
		return;
	for (int i = 0; i < MAX_WAKE_SLOTS; i++)
	{
		pg_atomic_init_u32(&wake_slots[i].dboid, InvalidOid);
		pg_atomic_init_u32(&wake_slots[i].procno, 0);
		for (int r = 0; r < NUM_WAKE_REASONS; r++)
			pg_atomic_init_u32(&wake_slots[i].flags[r], 0);
	}
}

const ShmemPart worker_wake_shmem = {
	"pg_notifier worker wake-up",
	MAX_WAKE_SLOTS * sizeof(WakeSlot),
	worker_wake_attach_shmem
};

static void
worker_wake_disarm(int code, Datum arg)
{
	pg_atomic_write_u32(&my_wake->procno, 0);
	pg_atomic_write_u32(&my_wake->dboid, InvalidOid);
	my_wake = NULL;
}

/*
 * A connected worker, holding registry entry slotno: from now on committing
 * backends of its database set its latch.  The caller looks at the outbox
 * and the extension after this.
 */
void
worker_wake_arm(int slotno)
{
	Assert(slotno >= 0 && slotno < MAX_WAKE_SLOTS);
	my_wake = &wake_slots[slotno];
	for (int r = 0; r < NUM_WAKE_REASONS; r++)
		pg_atomic_write_u32(&my_wake->flags[r], 0);
#if PG_VERSION_NUM >= 170000
	pg_atomic_write_u32(&my_wake->procno, MyProcNumber + 1);
#else
	pg_atomic_write_u32(&my_wake->procno, MyProc->pgprocno + 1);
#endif
	pg_atomic_write_u32(&my_wake->dboid, MyDatabaseId);
	pg_memory_barrier();
	on_shmem_exit(worker_wake_disarm, (Datum) 0);
}

/* The worker: was it woken for reason since the last call? */
bool
worker_wake_take(WakeReason reason)
{
	return my_wake != NULL && pg_atomic_exchange_u32(&my_wake->flags[reason], 0) != 0;
}

/*
 * A transaction committed that concerns the worker of database dboid (if
 * there is one): wake it for reason.  Called from a commit callback: takes
 * no lock and cannot fail.
 */
void
worker_wake(Oid dboid, WakeReason reason)
{
	if (wake_slots == NULL)
		return;
	for (int i = 0; i < MAX_WAKE_SLOTS; i++)
	{
		WakeSlot   *wake = &wake_slots[i];
		uint32		procno;

		if (pg_atomic_read_u32(&wake->dboid) != dboid)
			continue;
		pg_atomic_write_u32(&wake->flags[reason], 1);
		pg_memory_barrier();
		procno = pg_atomic_read_u32(&wake->procno);
		if (procno != 0)
			SetLatch(&GetPGProcByNumber(procno - 1)->procLatch);
	}
}
