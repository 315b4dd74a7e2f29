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

#include "catalog/namespace.h"
#include "commands/extension.h"
#include "utils/lsyscache.h"

#include "common/extension.h"
#include "pg_notifier.h"

/* InvalidOid when the extension is not installed in this database */
Oid
notifier_extension_oid(void)
{
	return get_extension_oid("pg_notifier", true);
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
