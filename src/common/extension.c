/*-------------------------------------------------------------------------
 *
 * extension.c
 *	  The extension's own objects: is it installed, where are its tables,
 *	  and the plans of its queries.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "common/extension.h"
#include "pg_notifier.h"

bool		notifier_routes_quiet = false;

/* InvalidOid when the extension is not installed in this database */
Oid
notifier_extension_oid(void)
{
	return get_extension_oid("pg_notifier", true);
}

/*
 * Is the extension extoid at the version this library is (its SQL objects as
 * this code expects them)?  Not after a new library was installed and
 * before ALTER EXTENSION pg_notifier UPDATE.
 */
bool
notifier_extension_current(Oid extoid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		current = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		current = !isnull && strcmp(TextDatumGetCString(d), PG_NOTIFIER_VERSION) == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return current;
}

Oid
notifier_table_oid(const char *relname)
{
	Oid			nsp = get_namespace_oid(NOTIFIER_SCHEMA, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s.%s does not exist", NOTIFIER_SCHEMA, relname),
				 errhint(NOTIFIER_REINSTALL_HINT)));
	return relid;
}

/*
 * Prepare *plan once per backend and keep it; the plan cache re-plans it
 * when the tables it uses change.  Connected to SPI.
 */
SPIPlanPtr
keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, const Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared;

		prepared = SPI_prepare(sql, nargs, unconstify(Oid *, argtypes));
		if (prepared == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}

/*
 * Plan the kept plans for their indexes, until the end of the transaction
 * (GUC_ACTION_LOCAL) or of the caller's GUC nest level (GUC_ACTION_SAVE).
 *
 * The extension's queue-like tables (the outbox, deliveries, notifier.queue)
 * have an index made for each query on them, but their statistics describe
 * what they held at the last ANALYZE: often nothing, just after a drain.  A
 * plan made then -- a sequential scan, or, for "ORDER BY ... LIMIT", a
 * bitmap scan and a sort, or another index walked through other channels'
 * rows -- is kept until the next ANALYZE, and costs O(dead and live rows)
 * per call once the backlog has grown.  With sequential scans ruled out
 * (and, when ordered, bitmap scans and sorts: the order must come from an
 * index), a generic plan is as good as any custom one, and every call
 * reuses it.  No JIT: a path ruled out is only made to cost 1e10, so a plan
 * that still needs one (the sort of a few returned rows, a scan of a table
 * without an index for it) would look worth compiling at every execution,
 * which costs a hundred times the query.
 */
void
plan_for_indexes(GucAction action, bool ordered)
{
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 action, true, 0, false);
	if (ordered)
	{
		(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET,
								 PGC_S_SESSION, action, true, 0, false);
		(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
								 action, true, 0, false);
	}
	(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET,
							 PGC_S_SESSION, action, true, 0, false);
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 action, true, 0, false);
}
