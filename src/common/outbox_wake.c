/*-------------------------------------------------------------------------
 *
 * outbox_wake.c
 *	  The outbox wake-up: a transaction that wrote events to
 *	  notifier.outbox sets the latch of its database's worker when it
 *	  commits.
 *
 * The wake-up happens in a commit callback, where nothing may fail and no
 * lock should be waited for, so it is lock-free: one slot per worker
 * registry entry (worker_registry.c), holding the worker's database, its
 * PGPROC number and a "pending" flag, all atomics.  A committing writer
 * sets the flag of every slot of its database and then the latch; the
 * worker clears the flag before it looks at the outbox.  A stale PGPROC
 * number (the worker just exited) costs only a spurious wake-up of
 * whichever process has that PGPROC now.
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

#include "common/outbox_wake.h"
#include "common/shmem.h"
#include "pg_notifier.h"

#define MAX_WAKE_SLOTS NOTIFIER_MAX_DATABASES

typedef struct WakeSlot
{
	pg_atomic_uint32 dboid;		/* the worker's database; 0: no worker */
	pg_atomic_uint32 procno;	/* its PGPROC number + 1; 0: none */
	pg_atomic_uint32 pending;	/* 1: outbox events committed since it looked */
} WakeSlot;

static WakeSlot *wake_slots = NULL; /* [MAX_WAKE_SLOTS]; NULL: no segment */
static WakeSlot *my_wake = NULL;	/* the worker's own slot */

static void
outbox_wake_attach_shmem(void *mem, bool found)
{
	wake_slots = mem;
	if (found)
		return;
	for (int i = 0; i < MAX_WAKE_SLOTS; i++)
	{
		pg_atomic_init_u32(&wake_slots[i].dboid, InvalidOid);
		pg_atomic_init_u32(&wake_slots[i].procno, 0);
		pg_atomic_init_u32(&wake_slots[i].pending, 0);
	}
}

const ShmemPart outbox_wake_shmem = {
	"pg_notifier outbox wake-up",
	MAX_WAKE_SLOTS * sizeof(WakeSlot),
	outbox_wake_attach_shmem
};

static void
outbox_wake_disarm(int code, Datum arg)
{
	pg_atomic_write_u32(&my_wake->procno, 0);
	pg_atomic_write_u32(&my_wake->dboid, InvalidOid);
	my_wake = NULL;
}

/*
 * A connected worker, holding registry entry slotno: from now on committing
 * outbox writers of its database set its latch.  The caller looks at the
 * outbox after this.
 */
void
outbox_wake_arm(int slotno)
{
	Assert(slotno >= 0 && slotno < MAX_WAKE_SLOTS);
	my_wake = &wake_slots[slotno];
	pg_atomic_write_u32(&my_wake->pending, 0);
#if PG_VERSION_NUM >= 170000
	pg_atomic_write_u32(&my_wake->procno, MyProcNumber + 1);
#else
	pg_atomic_write_u32(&my_wake->procno, MyProc->pgprocno + 1);
#endif
	pg_atomic_write_u32(&my_wake->dboid, MyDatabaseId);
	pg_memory_barrier();
	on_shmem_exit(outbox_wake_disarm, (Datum) 0);
}

/* The worker: were outbox events committed since the last call? */
bool
outbox_wake_take(void)
{
	return my_wake != NULL && pg_atomic_exchange_u32(&my_wake->pending, 0) != 0;
}

/*
 * A transaction that wrote outbox events committed: wake the worker of
 * its database, if there is one.  Called from a commit callback: takes no
 * lock and cannot fail.
 */
void
outbox_wake(Oid dboid)
{
	if (wake_slots == NULL)
		return;
	for (int i = 0; i < MAX_WAKE_SLOTS; i++)
	{
		WakeSlot   *wake = &wake_slots[i];
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
