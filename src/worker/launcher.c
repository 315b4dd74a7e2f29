/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: a background worker, started by the postmaster when
 *	  pg_notifier is in shared_preload_libraries, that starts one worker
 *	  per database named in pg_notifier.databases.
 *
 * A background worker connects to one database for its whole life, and
 * connecting to one that does not exist is a FATAL error, so the per-
 * database workers are dynamic: the launcher, connected to no database
 * (it reads only the shared catalogs pg_database and pg_authid), starts a
 * worker once its database and role exist, and starts it again
 * NOTIFIER_RESTART_SECONDS after it stopped, for whatever reason.  A
 * missing database is logged once and checked again every
 * MISSING_RECHECK_SECONDS.  On SIGHUP the list is read again: new
 * databases get a worker, removed ones lose theirs.
 *
 * Its waits are all on its latch, which the postmaster sets when one of
 * its workers starts or stops (bgw_notify_pid).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "worker/launcher.h"
#include "pg_notifier.h"
#include "common/worker_registry.h"

#define MISSING_RECHECK_SECONDS 10

/* a database of pg_notifier.databases, as the launcher tracks it */
typedef struct Database
{
	char		name[NAMEDATALEN];
	BackgroundWorkerHandle *handle; /* NULL: no worker running */
	TimestampTz start_at;		/* start a worker once it is this late */
	WorkerState reported;		/* missing database/role already logged */
} Database;

static List *databases = NIL;	/* of Database *, in TopMemoryContext */

PGDLLEXPORT void notifier_launcher_main(Datum main_arg);

/*
 * Parse a pg_notifier.databases value: a comma-separated list of database
 * names (identifiers: quote mixed case), duplicates removed.
 */
bool
parse_database_list(const char *value, List **dbnames)
{
	char	   *copy = pstrdup(value);
	List	   *names;
	ListCell   *lc;

	*dbnames = NIL;
	if (!SplitIdentifierString(copy, ',', &names))
		return false;
	foreach(lc, names)
	{
		char	   *name = lfirst(lc);

		if (name[0] == '\0')
			return false;
		if (!list_member(*dbnames, makeString(name)))
			*dbnames = lappend(*dbnames, makeString(name));
	}
	return true;
}

/* The parts common to the launcher and the workers. */
static void
init_bgworker(BackgroundWorker *bgw, const char *function, const char *type,
			  int restart_time)
{
	memset(bgw, 0, sizeof(BackgroundWorker));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw->bgw_restart_time = restart_time;
	snprintf(bgw->bgw_library_name, BGW_MAXLEN, "pg_notifier");
	snprintf(bgw->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(bgw->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(bgw->bgw_type, BGW_MAXLEN, "%s", type);
}

void
launcher_register(void)
{
	BackgroundWorker bgw;

	init_bgworker(&bgw, "notifier_launcher_main", "pg_notifier launcher",
				  NOTIFIER_RESTART_SECONDS);
	RegisterBackgroundWorker(&bgw);
}

static Database *
find_database(const char *name)
{
	ListCell   *lc;

	foreach(lc, databases)
	{
		Database   *db = lfirst(lc);

		if (strcmp(db->name, name) == 0)
			return db;
	}
	return NULL;
}

/*
 * (Re)read pg_notifier.databases: stop the workers of databases no longer
 * named, track the new ones.
 */
static void
configure(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	List	   *names;
	List	   *names_cstr = NIL;
	List	   *kept = NIL;
	ListCell   *lc;

	if (!parse_database_list(notifier_databases, &names))
		names = NIL;			/* the GUC's check hook refused it already */
	foreach(lc, names)
		names_cstr = lappend(names_cstr, strVal(lfirst(lc)));

	foreach(lc, databases)
	{
		Database   *db = lfirst(lc);

		if (list_member(names, makeString(db->name)))
			kept = lappend(kept, db);
		else
		{
			if (db->handle != NULL)
				TerminateBackgroundWorker(db->handle);
			ereport(LOG,
					(errmsg("stopping the worker of database \"%s\"", db->name),
					 errdetail("The database was removed from pg_notifier.databases.")));
			pfree(db);
		}
	}
	list_free(databases);
	databases = kept;

	foreach(lc, names)
	{
		const char *name = strVal(lfirst(lc));
		Database   *db;

		if ((db = find_database(name)) != NULL)
		{
			/* without a worker: look for its database (or role) again now */
			if (db->handle == NULL)
				db->start_at = 0;
			continue;
		}
		db = palloc0(sizeof(Database));
		strlcpy(db->name, name, NAMEDATALEN);
		db->reported = WORKER_STOPPED;
		databases = lappend(databases, db);
	}
	registry_configure(names_cstr);
	MemoryContextSwitchTo(old);
}

/*
 * Scan a shared catalog for a row whose name column (the NameData at
 * name_offset in the row) is name.  The launcher has no database, so no relcache
 * for catalog indexes may be there: a heap scan, as autovacuum's launcher
 * does.  Returns whether found, and calls check on the row if so.
 */
static bool
catalog_has_name(Oid catalog, size_t name_offset, const char *name,
				 bool (*check) (HeapTuple tuple))
{
	Relation	rel = table_open(catalog, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
	HeapTuple	tuple;
	bool		found = false;

	while (!found && (tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Name		tuple_name = (Name) ((char *) GETSTRUCT(tuple) + name_offset);

		if (strcmp(NameStr(*tuple_name), name) == 0)
			found = (check == NULL || check(tuple));
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

static bool
role_can_login(HeapTuple tuple)
{
	return ((Form_pg_authid) GETSTRUCT(tuple))->rolcanlogin;
}

/* Can a worker start for db now?  If not, say why once, in the log. */
static bool
can_start(Database *db)
{
	WorkerState problem = WORKER_STOPPED;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	if (!catalog_has_name(DatabaseRelationId,
						  offsetof(FormData_pg_database, datname),
						  db->name, NULL))
		problem = WORKER_DATABASE_MISSING;
	else if (notifier_role[0] != '\0' &&
			 !catalog_has_name(AuthIdRelationId,
							   offsetof(FormData_pg_authid, rolname),
							   notifier_role, role_can_login))
		problem = WORKER_ROLE_MISSING;
	CommitTransactionCommand();

	if (problem == WORKER_STOPPED)
	{
		db->reported = WORKER_STOPPED;
		return true;
	}
	registry_database_state(db->name, problem);
	if (db->reported != problem)
	{
		if (problem == WORKER_DATABASE_MISSING)
			ereport(LOG,
					(errmsg("database \"%s\" does not exist", db->name),
					 errdetail("Its pg_notifier worker starts once it is created.")));
		else
			ereport(LOG,
					(errmsg("role \"%s\" does not exist or cannot log in", notifier_role),
					 errdetail("No pg_notifier worker starts for database \"%s\".", db->name),
					 errhint("Set pg_notifier.role to a role with LOGIN, or to '' for the bootstrap superuser.")));
		db->reported = problem;
	}
	return false;
}

static void
start_worker(Database *db)
{
	BackgroundWorker bgw;

	/* the launcher restarts it, after NOTIFIER_RESTART_SECONDS */
	init_bgworker(&bgw, "notifier_worker_main", "pg_notifier worker",
				  BGW_NEVER_RESTART);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_notifier worker for database %s", db->name);
	memcpy(bgw.bgw_extra, db->name, NAMEDATALEN);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &db->handle))
	{
		db->handle = NULL;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the pg_notifier worker of database \"%s\"",
						db->name),
				 errhint("Raise max_worker_processes.")));
		db->start_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   MISSING_RECHECK_SECONDS * 1000);
		return;
	}
	registry_database_state(db->name, WORKER_STARTING);
}

/*
 * Start the workers that are due; returns how many milliseconds until the
 * next one is, or -1 when none is waiting.
 */
static long
launch_due_workers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = -1;
	ListCell   *lc;

	foreach(lc, databases)
	{
		Database   *db = lfirst(lc);
		pid_t		pid;

		if (db->handle != NULL &&
			GetBackgroundWorkerPid(db->handle, &pid) == BGWH_STOPPED)
		{
			pfree(db->handle);
			db->handle = NULL;
			db->start_at = TimestampTzPlusMilliseconds(now, NOTIFIER_RESTART_SECONDS * 1000);
		}
		if (db->handle != NULL)
			continue;
		if (now >= db->start_at)
		{
			if (can_start(db))
			{
				start_worker(db);
				continue;
			}
			db->start_at = TimestampTzPlusMilliseconds(now, MISSING_RECHECK_SECONDS * 1000);
		}
		{
			long		ms = TimestampDifferenceMilliseconds(now, db->start_at);

			if (wait_ms < 0 || ms < wait_ms)
				wait_ms = ms;
		}
	}
	return wait_ms;
}

/* When the launcher exits, so do its workers; a new launcher restarts them. */
static void
launcher_exit(int code, Datum arg)
{
	ListCell   *lc;

	foreach(lc, databases)
	{
		Database   *db = lfirst(lc);

		if (db->handle != NULL)
			TerminateBackgroundWorker(db->handle);
	}
}

void
notifier_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("pg_notifier launcher");
	before_shmem_exit(launcher_exit, (Datum) 0);

	configure();
	for (;;)
	{
		long		wait_ms = launch_due_workers();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH |
						 (wait_ms >= 0 ? WL_TIMEOUT : 0),
						 wait_ms >= 0 ? Max(wait_ms, 10) : 0,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			configure();
		}
	}
}
