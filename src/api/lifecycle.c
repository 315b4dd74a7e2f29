/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  How the background processes hear of CREATE and DROP EXTENSION at
 *	  once, rather than on their next periodic look.
 *
 * The install script ends with notifier.worker_start(): when that
 * transaction commits, the launcher is asked, through shared memory, to
 * start the worker of this database (worker_registry.c) -- with
 * pg_notifier.databases = '*' no worker runs in a database without the
 * extension.  An event trigger of the extension calls
 * notifier.extension_dropped() at the start of every DROP EXTENSION (and
 * DROP SCHEMA, DROP OWNED, which can drop it too): when that transaction
 * commits, the worker of this database is woken to look whether its
 * extension is still there (worker_wake.c).  Both act only at commit: a
 * rolled-back CREATE or DROP changes nothing, and nobody looks before the
 * change is visible.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/event_trigger.h"
#include "fmgr.h"
#include "miscadmin.h"

#include "common/worker_registry.h"
#include "common/worker_wake.h"

/* what to tell at commit */
static bool start_at_commit = false;
static bool recheck_at_commit = false;
static bool callback_registered = false;

static void
lifecycle_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (start_at_commit)
				registry_request_start(MyDatabaseId);
			if (recheck_at_commit)
				worker_wake(MyDatabaseId, WAKE_EXTENSION);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			start_at_commit = recheck_at_commit = false;
			break;
		default:
			break;
	}
}

static void
register_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(lifecycle_xact_callback, NULL);
		callback_registered = true;
	}
}

PG_FUNCTION_INFO_V1(notifier_worker_start);

/*
 * notifier.worker_start(): at commit, ask the launcher for this database's
 * worker.  Harmless when it runs already.
 */
Datum
notifier_worker_start(PG_FUNCTION_ARGS)
{
	register_callback();
	start_at_commit = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(notifier_extension_dropped);

/*
 * notifier.extension_dropped(): event trigger, ddl_command_start of DROP
 * EXTENSION, DROP SCHEMA and DROP OWNED: at commit, the worker looks
 * whether the extension is still there.
 */
Datum
notifier_extension_dropped(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notifier.extension_dropped() was not called as an event trigger")));
	register_callback();
	recheck_at_commit = true;
	PG_RETURN_NULL();
}
