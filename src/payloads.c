/*-------------------------------------------------------------------------
 *
 * payloads.c
 *	  Storing oversize events in notifier.payloads.
 *
 * The insert runs as the owner of notifier.payloads (the role that created
 * the extension), so a role writing to a watched table needs no privilege
 * on it: PUBLIC has none.  The plan is prepared once per backend and kept;
 * the plan cache re-plans it if the table is recreated.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "payloads.h"
#include "pg_notifier.h"

static SPIPlanPtr insert_plan = NULL;

static Oid
payloads_owner(void)
{
	Oid			nsp = get_namespace_oid(NOTIFIER_SCHEMA, false);
	Oid			relid = get_relname_relid("payloads", nsp);
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table notifier.payloads does not exist"),
				 errhint("Reinstall the extension: DROP EXTENSION pg_notifier; CREATE EXTENSION pg_notifier;")));
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * Store an event; returns its reference (notifier.payloads.id).
 */
int64
payload_store(const char *event)
{
	Oid			save_userid;
	int			save_sec_context;
	Datum		value = CStringGetTextDatum(event);
	bool		isnull;
	int64		ref;
	int			rc;
	bool		pushed_snapshot = false;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	/* an error aborts the (sub)transaction, which restores the user */
	SetUserIdAndSecContext(payloads_owner(),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	/* at pre-commit (coalesced events) no snapshot is active */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed_snapshot = true;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (insert_plan == NULL)
	{
		Oid			argtypes[1] = {JSONOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO notifier.payloads (event) VALUES ($1) RETURNING id",
						   1, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		insert_plan = plan;
	}

	rc = SPI_execute_plan(insert_plan, &value, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "storing an oversize event failed: %s", SPI_result_code_string(rc));
	ref = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (pushed_snapshot)
		PopActiveSnapshot();

	SetUserIdAndSecContext(save_userid, save_sec_context);
	return ref;
}
