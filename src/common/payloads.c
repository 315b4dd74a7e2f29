/*-------------------------------------------------------------------------
 *
 * payloads.c
 *	  notifier.payloads, where oversize events are kept: storing them (the
 *	  trigger) and fetching them (the worker, which also prunes them).
 *
 * The insert runs as the owner of notifier.payloads (the role that created
 * the extension), so a role writing to a watched table needs no privilege
 * on it: PUBLIC has none.  The plan is prepared once per backend and kept;
 * the plan cache re-plans it if the table is recreated.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
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

#include "common/extension.h"
#include "common/owner_switch.h"
#include "common/payloads.h"
#include "pg_notifier.h"

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr fetch_plan = NULL;

/*
 * Store an event; returns its reference (notifier.payloads.id).
 */
int64
payload_store(const char *event)
{
	static const Oid insert_argtypes[] = {JSONOID};
	OwnerSwitch sw;
	Datum		value = CStringGetTextDatum(event);
	bool		isnull;
	int64		ref;
	int			rc;
	bool		pushed_snapshot = false;

	become_table_owner("payloads", &sw);

	/* at pre-commit (coalesced events) no snapshot is active */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed_snapshot = true;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	keep_plan(&insert_plan,
			  "INSERT INTO notifier.payloads (event) VALUES ($1) RETURNING id",
			  1, insert_argtypes);
	rc = SPI_execute_plan(insert_plan, &value, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "storing an oversize event failed: %s", SPI_result_code_string(rc));
	ref = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (pushed_snapshot)
		PopActiveSnapshot();

	restore_user(&sw);
	return ref;
}

/*
 * Is payload the reference form of an oversize event (see emit.c), the
 * envelope and maybe the key followed by ,"ref":N,"truncated":true}?
 */
bool
payload_reference(const char *payload, int64 *ref)
{
	static const char tail[] = ",\"truncated\":true}";
	static const char mark[] = ",\"ref\":";
	size_t		len = strlen(payload);
	const char *tail_start;
	const char *found = NULL;
	char	   *end;
	long long	value;

	if (payload[0] != '{' || len < sizeof(tail) - 1)
		return false;
	tail_start = payload + len - (sizeof(tail) - 1);
	if (strcmp(tail_start, tail) != 0)
		return false;
	for (const char *p = payload; (p = strstr(p, mark)) != NULL && p < tail_start; p++)
		found = p;
	if (found == NULL)
		return false;
	errno = 0;
	value = strtoll(found + sizeof(mark) - 1, &end, 10);
	if (errno != 0 || end != tail_start || value <= 0)
		return false;
	*ref = (int64) value;
	return true;
}

/*
 * The event stored under a reference, or NULL when there is none (pruned,
 * or a payload that only looks like a reference).  The caller is connected
 * to SPI, in a transaction with a snapshot; the result is palloc'd in the
 * caller's memory context.
 */
char *
payload_fetch(int64 ref)
{
	static const Oid fetch_argtypes[] = {INT8OID};
	Datum		value = Int64GetDatum(ref);
	char	   *event = NULL;
	int			rc;

	keep_plan(&fetch_plan,
			  "SELECT event::pg_catalog.text FROM notifier.payloads WHERE id OPERATOR(pg_catalog.=) $1",
			  1, fetch_argtypes);
	rc = SPI_execute_plan(fetch_plan, &value, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "fetching a stored event failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		if (!isnull)
			event = text_to_cstring(DatumGetTextPP(d));
	}
	return event;
}
