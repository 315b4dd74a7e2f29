/*
 * floor_trigger.c -- the floors of test/bench/triggers, built by the
 * benchmark with PGXS into its own installation; never part of pg_notifier.
 *
 * bench_floor_trigger: an AFTER ROW trigger in C that does nothing.  Every
 * per-row AFTER trigger pays what this one costs (the trigger queue, the
 * re-fetch of the row, the function call), so the capture trigger is
 * measured against it.
 *
 * bench_notify_trigger(channel, bytes): the floor plus one NOTIFY per row of
 * a payload of that many bytes, unique per row (so PostgreSQL's duplicate
 * removal merges none) and built for nothing (no JSON).  It is what any
 * trigger that sends each row's event with NOTIFY pays at least: the
 * difference between it and the floor is PostgreSQL's NOTIFY of payloads of
 * that size, not anything pg_notifier does.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_floor_trigger);
PG_FUNCTION_INFO_V1(bench_notify_trigger);

Datum
bench_floor_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "bench_floor_trigger: not called as a trigger");
	return PointerGetDatum(NULL);
}

Datum
bench_notify_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	static uint64 seq = 0;
	StringInfoData payload;
	int			bytes;

	if (!CALLED_AS_TRIGGER(fcinfo) || trigdata->tg_trigger->tgnargs != 2)
		elog(ERROR, "bench_notify_trigger: not called as a trigger with (channel, bytes)");
	bytes = atoi(trigdata->tg_trigger->tgargs[1]);
	if (bytes < 32 || bytes >= NAMEDATALEN * 100)
		elog(ERROR, "bench_notify_trigger: bytes must be between 32 and 6399");

	initStringInfo(&payload);
	appendStringInfo(&payload, "%u.%llu:", GetTopTransactionId(),
					 (unsigned long long) ++seq);
	while (payload.len < bytes)
		appendStringInfoChar(&payload, 'x');
	Async_Notify(trigdata->tg_trigger->tgargs[0], payload.data);
	pfree(payload.data);
	return PointerGetDatum(NULL);
}
