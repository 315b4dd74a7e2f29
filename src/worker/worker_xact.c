/*-------------------------------------------------------------------------
 *
 * worker_xact.c
 *	  A transaction of the worker, with an active snapshot and an SPI
 *	  connection: how every piece of the worker talks to its tables.
 *
 * A background worker has no client whose messages set the statement
 * start time, so it must set it itself: without that, now() (and so
 * next_attempt_at, pruning ages, column defaults) would be stuck at the
 * time the worker started.
 *
 * Every transaction of the worker first locks the extension (as DROP
 * EXTENSION does, in share mode) and looks it up again: a DROP EXTENSION
 * then waits for the worker's transaction to end, and a transaction that
 * finds the extension gone, or another one than the worker's routes came
 * from, touches none of its tables.  So a DROP/CREATE EXTENSION race
 * never makes a worker query fail with "relation ... does not exist": the
 * worker goes back to waiting, or reloads its routes.
 *
 * The worker's own settings are pinned once, when it starts, at the
 * highest source (PGC_S_SESSION): postgresql.conf, ALTER SYSTEM, ALTER
 * DATABASE/ROLE ... SET come from lower sources and can change none of
 * them, not even on a reload.  See worker_settings[] for why each.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "common/extension.h"
#include "pg_notifier.h"
#include "worker/worker_xact.h"

/*
 * The settings of the worker's session that no server-wide setting may
 * change.
 */
typedef struct WorkerSetting
{
	const char *name;
	const char *value;
} WorkerSetting;

static const WorkerSetting worker_settings[] =
{
	/* no user's operator, function or table may stand in for a built-in */
	{"search_path", NOTIFIER_SAFE_SEARCH_PATH},

	/*
	 * It writes, whatever the server-wide default (applications turn
	 * default_transaction_read_only off per session); its short transactions
	 * are built for read committed (no serialization failures).
	 */
	{"default_transaction_read_only", "off"},
	{"default_transaction_isolation", "read committed"},
	{"default_transaction_deferrable", "off"},
	/* a long write that makes progress finishes */
	{"statement_timeout", "0"},

	/*
	 * A lock wait ends: a CREATE INDEX or LOCK on a queue table must not stop
	 * every route and the NOTIFY queue's reading for good; what times out is
	 * retried.
	 */
	{"lock_timeout", "10s"},
	{"idle_in_transaction_session_timeout", "0"},
#if PG_VERSION_NUM >= 140000
	{"idle_session_timeout", "0"},
#endif
	/* 'replica' would skip the triggers of queue tables and of its own */
	{"session_replication_role", "origin"},
	/* 'off' makes a query on a table with row security fail */
	{"row_security", "on"},
	/* an error in one route's subtransaction must not end the worker */
	{"exit_on_error", "off"},
	/* its queries' string literals are read as written */
	{"standard_conforming_strings", "on"},
	/* its queries are short: no parallel workers forced on them */
#if PG_VERSION_NUM >= 160000
	{"debug_parallel_query", "off"},
#else
	{"force_parallel_mode", "off"},
#endif
};

/* the memory context worker_xact_begin() was called in */
static MemoryContext caller_cxt = NULL;

/* the extension the worker's routes were loaded from (worker.c) */
static Oid	expected_extension = InvalidOid;

/* the extension the current transaction found, locked */
static Oid	found_extension = InvalidOid;

/* a transaction found another extension than expected_extension */
static bool extension_changed = false;

/* Pin the worker's settings; once, at start, in a transaction. */
void
worker_xact_pin_settings(void)
{
	for (int i = 0; i < lengthof(worker_settings); i++)
		(void) set_config_option(worker_settings[i].name, worker_settings[i].value,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET,
								 true, 0, false);
}

/*
 * In a transaction: lock the extension (share mode, until the end of the
 * transaction) and say whether it is the one the worker's routes came
 * from.  When not, the transaction must not touch the extension's tables,
 * and the worker looks at the extension again at once
 * (worker_xact_extension_changed).
 */
bool
worker_xact_lock_extension(void)
{
	Oid			ext = notifier_extension_oid();

	/*
	 * Lock, then look again: LockDatabaseObject() processes the invalidations
	 * of a DROP that committed while it waited.
	 */
	if (OidIsValid(ext))
	{
		LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
		if (notifier_extension_oid() != ext)
			ext = InvalidOid;
	}
	found_extension = ext;
	if (ext != expected_extension)
		extension_changed = true;
	return OidIsValid(ext) && ext == expected_extension;
}

/*
 * Start a transaction, with a snapshot and an SPI connection, and lock the
 * extension: returns worker_xact_lock_extension().  When false, the caller
 * commits at once.
 */
bool
worker_xact_begin(void)
{
	caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return worker_xact_lock_extension();
}

/* The extension the current transaction found (and locked), or InvalidOid. */
Oid
worker_xact_extension(void)
{
	return found_extension;
}

/* The worker's routes now come from ext (InvalidOid: none). */
void
worker_xact_expect_extension(Oid ext)
{
	expected_extension = ext;
	extension_changed = false;
}

/* Did a transaction find another extension than expected since? */
bool
worker_xact_extension_changed(void)
{
	return extension_changed;
}

/*
 * Commit, and report the table statistics (rate-limited by PostgreSQL):
 * without that autovacuum would never hear of the rows the worker deleted
 * from the outbox and the queue-like tables.  Back in the caller's memory
 * context (a commit leaves TopMemoryContext current).
 */
void
worker_xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller_cxt);
	pgstat_report_stat(false);
}

/*
 * Roll back the transaction worker_xact_begin() started, whatever state an
 * error left it in (SPI and the snapshot go with it).  Back in the caller's
 * memory context.
 */
void
worker_xact_abort(void)
{
	AbortCurrentTransaction();
	MemoryContextSwitchTo(caller_cxt);
}
