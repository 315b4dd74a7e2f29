/*-------------------------------------------------------------------------
 *
 * route_shape.c
 *	  A route's filter and transform, applied by the worker to each event
 *	  before anything is written for the route.
 *
 * The filter is a jsonpath evaluated with PostgreSQL's own engine, as
 * jsonb_path_match(event, filter, '{}', silent => false) would: true, the
 * route gets the event; false or unknown (SQL NULL, as in a WHERE clause),
 * it does not, and counts it as filtered; an error, or a result that is not
 * a single boolean, is an error of that event.  The filter sees the event
 * as sent, the transform what the filter let through.
 *
 * The transform, a function jsonb -> jsonb, is called as the route's owner
 * (the role that added the route or last set its transform) in a
 * security-restricted operation, with search_path = pg_catalog, pg_temp
 * (common/owner_switch.c), each call inside a GUC nest level of its own,
 * rolled back after it: nothing it does with its owner's rights outlives
 * the call, and nothing runs with the worker's.  The role is switched (and
 * search_path pinned) once for the events of a part, not per event, which
 * saved about 0.8 of the 6 us an identity transform adds per event
 * (test/bench/transform), and switched back before the sink writes them.  Before every write the
 * function is looked up again by its signature and checked
 * (common/route_transform.c), and so is its owner's EXECUTE right.  A NULL
 * result is an error of that event.
 *
 * Every error propagates.  The caller (forward.c) runs each write of a
 * route in a subtransaction and, when it fails, writes the events again in
 * halves down to the one that fails: that one becomes a dead letter of the
 * route with the reason, and the others are written.  A filter and a
 * transform must therefore give the same answer when asked again, which
 * the filter does; a transform that does not may be called more than once
 * for an event, and only the result of the write that commits counts.
 *
 * Memory: each event's jsonb, the filter's and the transform's work live in
 * a context reset after the event; what the transform returned is written
 * in parts of pg_notifier.max_batch_bytes (plus the event that passes it),
 * and forgotten after each part.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "common/owner_switch.h"
#include "common/route_transform.h"
#include "pg_notifier.h"
#include "worker/route_shape.h"

/* the most of a transform's error message that the reason repeats */
#define TRANSFORM_MESSAGE_MAX 900

/* what the events of one write share */
typedef struct ShapeState
{
	Route	   *route;
	Jsonb	   *no_vars;		/* '{}': the filter's variables */
	FmgrInfo	transform;
	char	   *transform_name;
	OwnerSwitch owner_switch;	/* while running as the route's owner */
	bool		switched;
} ShapeState;

/* Does the route filter or transform its events? */
bool
route_shapes(const Route *route)
{
	return route->filter != NULL || route->transform != NULL;
}

/* jsonb_path_match(event, filter, '{}', false): NULL is not a match */
static bool
filter_matches(ShapeState *state, Jsonb *event)
{
	LOCAL_FCINFO(fcinfo, 4);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(event);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = PointerGetDatum(state->route->filter);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = JsonbPGetDatum(state->no_vars);
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = BoolGetDatum(false);
	fcinfo->args[3].isnull = false;
	result = jsonb_path_match(fcinfo);
	return !fcinfo->isnull && DatumGetBool(result);
}

/*
 * May the route's owner still run its transform?  An error (of every event
 * of the write, each a dead letter) when not.
 */
static void
transform_prepare(ShapeState *state)
{
	Route	   *route = state->route;
	Oid			fn = transform_lookup(route->transform, route->id);

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(route->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of route " INT64_FORMAT " (role oid %u) no longer exists",
						route->id, route->owner),
				 errhint("Set the transform again with notifier.alter_route(): it then runs as you.")));
	state->transform_name = format_procedure(fn);
	if (pg_proc_aclcheck(fn, route->owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for transform function %s of route " INT64_FORMAT,
						state->transform_name, route->id),
				 errdetail("Role \"%s\", the owner of the route, may not execute it.",
						   GetUserNameFromId(route->owner, false))));
	fmgr_info(fn, &state->transform);
}

/*
 * Run as the route's owner until owner_leave(): the events of a part are
 * transformed in one switch, and the sink writes them as the worker.  On an
 * error, the subtransaction's abort restores the user and rolls the GUC
 * nest levels back (see owner_switch.c).
 */
static void
owner_enter(ShapeState *state)
{
	if (state->switched)
		return;
	become_owner(state->route->owner, &state->owner_switch);
	state->switched = true;
}

static void
owner_leave(ShapeState *state)
{
	if (!state->switched)
		return;
	restore_user(&state->owner_switch);
	state->switched = false;
}

/*
 * transform(event) as the route's owner, in a GUC nest level of its own:
 * what one call sets (set_config(..., false) included) is gone at the next.
 * Its errors say what failed.
 */
static Jsonb *
transform_call(ShapeState *state, Jsonb *event)
{
	LOCAL_FCINFO(fcinfo, 1);
	MemoryContext cxt = CurrentMemoryContext;
	Datum		result = (Datum) 0;
	int			nestlevel;

	InitFunctionCallInfoData(*fcinfo, &state->transform, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(event);
	fcinfo->args[0].isnull = false;

	owner_enter(state);
	nestlevel = NewGUCNestLevel();
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			len;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		len = strlen(edata->message);
		edata->message = psprintf("transform %s failed: %.*s%s", state->transform_name,
								  pg_mbcliplen(edata->message, len, TRANSFORM_MESSAGE_MAX),
								  edata->message,
								  len > TRANSFORM_MESSAGE_MAX ? "..." : "");
		ReThrowError(edata);
	}
	PG_END_TRY();
	AtEOXact_GUC(false, nestlevel);

	if (fcinfo->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("transform %s returned NULL", state->transform_name),
				 errdetail("A transform must return the event to send, as jsonb."),
				 errhint("Use the route's filter to leave events out.")));
	return DatumGetJsonbP(result);
}

/*
 * Write events[0..n) (JSON texts, in order) to a route that has a filter or
 * a transform, with write_fn(): what the filter lets through, as the transform
 * makes it, in parts of about max_batch_bytes (the last event of a part
 * may pass it).  Returns how many events the filter left out.  Errors
 * propagate: see the header comment.
 */
int
route_shape_write(Route *route, char **events, int n, TimestampTz received_at,
				  RouteWriteFn write_fn)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext event_cxt;
	MemoryContext part_cxt;
	ShapeState	state;
	char	  **payloads = palloc(n * sizeof(char *));
	char	  **originals = palloc(n * sizeof(char *));
	int			npart = 0;
	Size		bytes = 0;
	int			filtered = 0;

	event_cxt = AllocSetContextCreate(caller, "pg_notifier route event",
									  ALLOCSET_DEFAULT_SIZES);
	part_cxt = AllocSetContextCreate(caller, "pg_notifier route part",
									 ALLOCSET_DEFAULT_SIZES);
	state.route = route;
	state.switched = false;
	state.no_vars = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	if (route->transform != NULL)
		transform_prepare(&state);

	for (int i = 0; i < n; i++)
	{
		Jsonb	   *event;
		char	   *payload = events[i];

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(event_cxt);
		event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(events[i])));
		if (route->filter != NULL && !filter_matches(&state, event))
		{
			filtered++;
			MemoryContextReset(event_cxt);
			continue;
		}
		if (route->transform != NULL)
		{
			Jsonb	   *shaped = transform_call(&state, event);

			MemoryContextSwitchTo(part_cxt);
			payload = JsonbToCString(NULL, &shaped->root, VARSIZE(shaped));
		}
		MemoryContextSwitchTo(caller);
		MemoryContextReset(event_cxt);

		payloads[npart] = payload;
		originals[npart] = events[i];
		npart++;
		bytes += strlen(payload);
		if (bytes >= (Size) notifier_max_batch_bytes)
		{
			owner_leave(&state);
			MemoryContextSwitchTo(part_cxt);
			write_fn(route, payloads, originals, npart, received_at);
			MemoryContextSwitchTo(caller);
			MemoryContextReset(part_cxt);
			npart = 0;
			bytes = 0;
		}
	}
	owner_leave(&state);
	if (npart > 0)
	{
		MemoryContextSwitchTo(part_cxt);
		write_fn(route, payloads, originals, npart, received_at);
	}
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(event_cxt);
	MemoryContextDelete(part_cxt);
	pfree(payloads);
	pfree(originals);
	return filtered;
}
