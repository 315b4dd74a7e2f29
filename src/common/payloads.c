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
#include "storage/lmgr.h"
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
 * Lock notifier.payloads and its sequence as storing an event will
 * (coalesce.c takes them when a transaction first holds an event).
 */
void
payload_lock(void)
{
	Oid			relid = notifier_table_oid("payloads");
	Oid			seqid = get_relname_relid("payloads_id_seq", get_rel_namespace(relid));

	LockRelationOid(relid, RowExclusiveLock);
	if (OidIsValid(seqid))
		LockRelationOid(seqid, RowExclusiveLock);
}

/*
 * Store an event; returns its reference (notifier.payloads.id).
 */
int64
payload_store(const char *event, const char *channel)
{
	static const Oid insert_argtypes[] = {JSONOID, TEXTOID};
	OwnerSwitch sw;
	Datum		values[2];
	bool		isnull;
	int64		ref;
	int			rc;
	bool		pushed_snapshot = false;

	values[0] = CStringGetTextDatum(event);
	values[1] = CStringGetTextDatum(channel);
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
			  "INSERT INTO notifier.payloads (event, channel) VALUES ($1, $2) RETURNING id",
			  2, insert_argtypes);
	rc = SPI_execute_plan(insert_plan, values, NULL, false, 1);
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
 * The event stored under a reference for channel, or NULL when there is
 * none (pruned, stored for another channel, or a payload that only looks
 * like a reference).  A reference is an ordinary NOTIFY payload that any
 * role can send: matching the channel keeps it from copying an event of
 * another table into this channel's routes.  The caller is connected to
 * SPI, in a transaction with a snapshot; the result is palloc'd in the
 * caller's memory context.
 */
char *
payload_fetch(int64 ref, const char *channel)
{
	static const Oid fetch_argtypes[] = {INT8OID, TEXTOID};
	Datum		values[2];
	char	   *event = NULL;
	int			rc;

	values[0] = Int64GetDatum(ref);
	values[1] = CStringGetTextDatum(channel);
	keep_plan(&fetch_plan,
			  "SELECT p.event::pg_catalog.text FROM notifier.payloads p"
			  " WHERE p.id OPERATOR(pg_catalog.=) $1"
			  "   AND p.channel OPERATOR(pg_catalog.=) $2",
			  2, fetch_argtypes);
	rc = SPI_execute_plan(fetch_plan, values, NULL, true, 1);
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
	/* the worker fetches many in one transaction: keep none of them twice */
	SPI_freetuptable(SPI_tuptable);
	return event;
}

/*
 * The "id" of one of our events ({"id":"<xid>.<seq>",...), or NULL for
 * another payload.
 */
char *
payload_event_id(const char *payload)
{
	static const char prefix[] = "{\"id\":\"";
	const char *end;

	if (strncmp(payload, prefix, sizeof(prefix) - 1) != 0)
		return NULL;
	payload += sizeof(prefix) - 1;
	end = strchr(payload, '"');
	if (end == NULL || end == payload || end - payload > 40)
		return NULL;
	return pnstrdup(payload, end - payload);
}
