/*-------------------------------------------------------------------------
 *
 * extension.c
 *	  The extension's own objects: is it installed, where are its tables,
 *	  running as their owner, and the plans of its queries.
 *
 * Writes to notifier.payloads and notifier.routes on behalf of a role that
 * has no privilege on them (PUBLIC has none) run as the owner of the table,
 * the role that created the extension, in a security-restricted operation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

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
				 errhint("Reinstall the extension: DROP EXTENSION pg_notifier; CREATE EXTENSION pg_notifier;")));
	return relid;
}

/*
 * Run as the owner of notifier.<relname> until restore_user(); an error in
 * between aborts the (sub)transaction, which restores the user as well.
 */
void
become_table_owner(const char *relname, OwnerSwitch *sw)
{
	Oid			relid = notifier_table_oid(relname);
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	SetUserIdAndSecContext(owner, sw->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
restore_user(const OwnerSwitch *sw)
{
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
}

/*
 * Prepare *plan once per backend and keep it; the plan cache re-plans it
 * when the tables it uses change.  Connected to SPI.
 */
SPIPlanPtr
keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare(sql, nargs, argtypes);

		if (prepared == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}
