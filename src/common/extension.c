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
	return keep_plan_options(plan, sql, nargs, argtypes, 0);
}

/*
 * keep_plan() with SPI_prepare_cursor()'s options: CURSOR_OPT_GENERIC_PLAN
 * for a statement whose generic plan is as good as any custom one, so that
 * it is never planned again per call.
 */
SPIPlanPtr
keep_plan_options(SPIPlanPtr *plan, const char *sql, int nargs, const Oid *argtypes,
				  int cursor_options)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared;

		prepared = SPI_prepare_cursor(sql, nargs, unconstify(Oid *, argtypes),
									  cursor_options);

		if (prepared == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}
