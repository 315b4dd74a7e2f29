/*
 * floor_trigger.c -- the floor of test/bench/triggers: an AFTER ROW trigger
 * in C that does nothing.  Every per-row AFTER trigger pays what this one
 * costs (the trigger queue, the re-fetch of the row, the function call), so
 * the capture trigger is measured against it.  Built by the benchmark with
 * PGXS into its own installation; never part of pg_notifier.
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_floor_trigger);

Datum
bench_floor_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "bench_floor_trigger: not called as a trigger");
	return PointerGetDatum(NULL);
}
