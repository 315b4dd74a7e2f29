/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: a background worker, started by the postmaster when
 *	  pg_notifier is in shared_preload_libraries, that starts one worker
 *	  per database that has the extension (pg_notifier.databases = '*',
 *	  the default), or per database named in pg_notifier.databases.
 *
 * A background worker connects to one database for its whole life, and
 * connecting to one that does not exist is a FATAL error, so the per-
 * database workers are dynamic: the launcher, connected to no database
 * (it reads only the shared catalogs pg_database and pg_authid), starts a
 * worker once its database and role exist.
 *
 * With '*', no process stays in a database without the extension: at start
 * (and on SIGHUP) the launcher probes every database that accepts
 * connections with a worker, which exits at once, saying so in the
 * registry, where the extension is not installed; that database is then
 * left alone until a CREATE EXTENSION in it commits and asks for its worker
 * through shared memory (worker_registry.c), which the launcher starts at
 * once.  DROP EXTENSION wakes the worker, which exits.  With a list, a
 * worker runs in each listed database and waits there for the extension.
 *
 * A worker that stops is started again at once; only a worker that stops
 * again within STABLE_SECONDS of its start is started after a backoff,
 * doubling from BACKOFF_MIN_MS up to BACKOFF_MAX_MS.  A missing database
 * is logged once and checked again every MISSING_RECHECK_SECONDS.  On
 * SIGHUP the setting is read again: new databases get a worker, removed
 * ones lose theirs.
 *
 * Its waits are all on its latch, which the postmaster sets when one of
 * its workers starts or stops (bgw_notify_pid), and CREATE EXTENSION sets
 * when it commits.
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

#include "common/database_list.h"
#include "worker/launcher.h"
#include "pg_notifier.h"
#include "common/worker_registry.h"

#define MISSING_RECHECK_SECONDS 10
#define STABLE_SECONDS 10
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 60000

/* a database the launcher runs (or probes, or waits to run) a worker for */
typedef struct Database
{
	char		name[NAMEDATALEN];
	BackgroundWorkerHandle *handle; /* NULL: no worker running */
	TimestampTz start_at;		/* start a worker once it is this late */
	TimestampTz started_at;		/* when the running worker was started */
	int			quick_exits;	/* exits within STABLE_SECONDS, in a row */
	WorkerState reported;		/* missing database/role already logged */
} Database;

/* all in TopMemoryContext */
static List *databases = NIL;	/* of Database * */
static bool all_databases = false;	/* pg_notifier.databases = '*' */
static List *no_extension = NIL;	/* '*': names of databases probed without
									 * the extension (String) */
static bool rescan_due = false; /* '*': look at every database */
static bool rescan_when_room = false;	/* '*': some could not be tracked */

PGDLLEXPORT void notifier_launcher_main(Datum main_arg);

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

/* Track a database (no worker yet); NULL when it is tracked already. */
static Database *
track_database(const char *name)
{
	MemoryContext old;
	Database   *db;

	if (find_database(name) != NULL)
		return NULL;
	old = MemoryContextSwitchTo(TopMemoryContext);
	db = palloc0(sizeof(Database));
	strlcpy(db->name, name, NAMEDATALEN);
	db->reported = WORKER_STOPPED;
	databases = lappend(databases, db);
	MemoryContextSwitchTo(old);
	return db;
}

/* Give every tracked database its registry entry, and only those. */
static void
sync_registry(void)
{
	List	   *names = NIL;
	ListCell   *lc;

	foreach(lc, databases)
	{
		names = lappend(names, ((Database *) lfirst(lc))->name);
	}
	registry_configure(names);
	list_free(names);
}

/*
 * (Re)read pg_notifier.databases: stop the workers of databases no longer
 * named, track the new ones.  With '*', every database is looked at again.
 */
static void
configure(void)
{
	List	   *names;
	List	   *kept = NIL;
	ListCell   *lc;

	if (!parse_database_list(notifier_databases, &names))
		names = NIL;			/* the GUC's check hook refused it already */
	all_databases = databases_all(notifier_databases);

	foreach(lc, databases)
	{
		Database   *db = lfirst(lc);

		if (all_databases || list_member(names, makeString(db->name)))
		{
			kept = lappend(kept, db);
			/* without a worker: look for its database (or role) again now */
			if (db->handle == NULL)
				db->start_at = 0;
			continue;
		}
		if (db->handle != NULL)
			TerminateBackgroundWorker(db->handle);
		ereport(LOG,
				(errmsg("stopping the worker of database \"%s\"", db->name),
				 errdetail("The database was removed from pg_notifier.databases.")));
		pfree(db);
	}
	list_free(databases);
	databases = kept;

	foreach(lc, names)
	{
		(void) track_database(strVal(lfirst(lc)));
	}
	list_free_deep(no_extension);
	no_extension = NIL;
	rescan_due = all_databases;
	sync_registry();
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

/*
 * '*': track every database that accepts connections and is not known to
 * lack the extension, while the registry has room; the rest wait for the
 * next look.  A heap scan of pg_database, as in catalog_has_name().
 */
static void
scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	rescan_due = rescan_when_room = false;
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);
		const char *name = NameStr(form->datname);

		if (!form->datallowconn || form->datistemplate ||
			list_member(no_extension, makeString((char *) name)) ||
			find_database(name) != NULL)
			continue;
		if (list_length(databases) >= NOTIFIER_MAX_DATABASES)
		{
			rescan_when_room = true;	/* once a probe has made room */
			break;
		}
		(void) track_database(name);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	sync_registry();
}

/* The name of database dboid, palloc'd; NULL when there is none. */
static char *
database_name(Oid dboid)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	char	   *name = NULL;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (name == NULL && (tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);

		if (form->oid == dboid)
			name = MemoryContextStrdup(TopMemoryContext, NameStr(form->datname));
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return name;
}

/*
 * CREATE EXTENSION committed in these databases: start their workers now
 * (with '*', or when they are listed).
 */
static void
serve_start_requests(void)
{
	Oid			dboids[NOTIFIER_MAX_DATABASES];
	bool		rescan;
	int			n = registry_take_start_requests(dboids, lengthof(dboids), &rescan);

	for (int i = 0; i < n; i++)
	{
		char	   *name = database_name(dboids[i]);
		Database   *db;

		if (name == NULL)
			continue;
		if (all_databases)
		{
			ListCell   *lc;

			foreach(lc, no_extension)
			{
				if (strcmp(strVal(lfirst(lc)), name) == 0)
				{
					no_extension = foreach_delete_current(no_extension, lc);
					break;
				}
			}
			if (track_database(name) != NULL)
				sync_registry();
		}
		db = find_database(name);
		if (db != NULL && db->handle == NULL)
		{
			db->start_at = 0;
			db->quick_exits = 0;
		}
		pfree(name);
	}
	if (rescan && all_databases)
		rescan_due = true;
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

	/* the launcher restarts it (launch_due_workers()) */
	init_bgworker(&bgw, "notifier_worker_main", "pg_notifier worker",
				  BGW_NEVER_RESTART);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pg_notifier worker for database %s", db->name);
	memcpy(bgw.bgw_extra, db->name, NAMEDATALEN);
	bgw.bgw_notify_pid = MyProcPid;

	db->started_at = GetCurrentTimestamp();
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
 * A worker stopped.  With '*', one that found no extension is forgotten
 * (returns false); any other starts again at once, or after a backoff if
 * it keeps stopping soon after its start.
 */
static bool
worker_stopped(Database *db, TimestampTz now)
{
	pfree(db->handle);
	db->handle = NULL;
	if (all_databases && registry_get_state(db->name) == WORKER_NO_EXTENSION)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		no_extension = lappend(no_extension, makeString(pstrdup(db->name)));
		MemoryContextSwitchTo(old);
		return false;
	}
	if (TimestampDifferenceExceeds(db->started_at, now, STABLE_SECONDS * 1000))
		db->quick_exits = 0;
	else
		db->quick_exits++;
	db->start_at = db->quick_exits <= 1 ? now :
		TimestampTzPlusMilliseconds(now, Min((int64) BACKOFF_MIN_MS << Min(db->quick_exits - 2, 16),
											 BACKOFF_MAX_MS));
	return true;
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
	bool		forgot = false;

	foreach(lc, databases)
	{
		Database   *db = lfirst(lc);
		pid_t		pid;

		if (db->handle != NULL &&
			GetBackgroundWorkerPid(db->handle, &pid) == BGWH_STOPPED &&
			!worker_stopped(db, now))
		{
			databases = foreach_delete_current(databases, lc);
			pfree(db);
			forgot = true;
			continue;
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
	if (forgot)
	{
		sync_registry();
		if (rescan_when_room)
		{
			rescan_due = true;
			wait_ms = 0;
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

	registry_launcher_arm();
	configure();
	for (;;)
	{
		long		wait_ms;

		serve_start_requests();
		if (rescan_due)
			scan_databases();
		wait_ms = launch_due_workers();

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
