/*-------------------------------------------------------------------------
 *
 * route_health.c
 *	  Disabling dead endpoints: a remote route whose endpoint answers
 *	  410 Gone, or that has not delivered anything for disable_after since
 *	  its first failure after the last success, is disabled.
 *
 * The delivery engine tells this file the outcome of each request
 * (route_health_outcome()), in the transaction that records it.  Only a
 * change is written to notifier.routes: failing_since set by the first
 * failure after a success and cleared by the next success, so that the
 * count survives restarts of the worker (disable_after is 5 days by
 * default); and disabled_at/disabled_reason, with the NOTIFY on
 * pg_notifier_events (notifier.route_state_changed()), in that same
 * transaction.  What the worker knows of each route is cached here, so
 * that an outcome costs no query unless it changes something; the cache is
 * dropped whenever the routes are loaded again (resume_route() clears the
 * columns).
 *
 * Writing failing_since is the worker's bookkeeping, not a change of the
 * routes: it is written without waking the worker and every backend
 * (notifier_routes_quiet), or a flapping endpoint would make the worker
 * reload its routes at every flap.  Disabling a route does wake them: the
 * worker then loads it as paused.  Until then route_health_disabled() keeps
 * the engine from claiming more of its rows.
 *
 * A reason is read by every role that may LISTEN in the database: it is
 * made of fixed texts, an HTTP status and a time, never of a URL or of what
 * the endpoint answered, and it is clipped.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/extension.h"
#include "common/sqlutil.h"
#include "worker/route_health.h"
#include "worker/routes.h"

/* the longest reason written (notifier.route_state_changed() clips at 200 characters) */
#define MAX_REASON_BYTES 200

typedef struct RouteHealth
{
	int64		route_id;		/* hash key */
	bool		disabled;		/* or gone: nothing more to do */
	TimestampTz failing_since;	/* 0: the last request succeeded */
	bool		has_deadline;	/* disable_after is not NULL */
	TimestampTz deadline;		/* failing_since + disable_after */
} RouteHealth;

static HTAB *health = NULL;

static SPIPlanPtr read_plan = NULL;
static SPIPlanPtr failing_plan = NULL;
static SPIPlanPtr succeeded_plan = NULL;
static SPIPlanPtr disable_plan = NULL;

/* The routes were loaded again: what was cached may be stale. */
void
route_health_forget(void)
{
	if (health != NULL)
		hash_destroy(health);
	health = NULL;
}

bool
route_health_disabled(int64 route_id)
{
	RouteHealth *h;

	if (health == NULL)
		return false;
	h = hash_search(health, &route_id, HASH_FIND, NULL);
	return h != NULL && h->disabled;
}

/* the first two columns of SPI's first row: failing_since, its deadline */
static void
take_failing(RouteHealth *h)
{
	bool		isnull;
	Datum		d;

	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	h->failing_since = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	h->has_deadline = !isnull;
	h->deadline = isnull ? 0 : DatumGetTimestampTz(d);
}

/* what notifier.routes says of the route, the first time it is needed */
static RouteHealth *
route_health(int64 route_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	RouteHealth *h;
	bool		found;

	if (health == NULL)
		health = routes_hash_create("pg_notifier route health", sizeof(RouteHealth),
									TopMemoryContext);
	h = hash_search(health, &route_id, HASH_ENTER, &found);
	if (found)
		return h;

	values[0] = Int64GetDatum(route_id);
	if (SPI_execute_plan(keep_plan(&read_plan,
								   "SELECT failing_since,"
								   " failing_since OPERATOR(pg_catalog.+) disable_after,"
								   " disabled_at IS NOT NULL"
								   " FROM notifier.routes WHERE id OPERATOR(pg_catalog.=) $1",
								   1, argtypes),
						 values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.routes failed");
	h->disabled = true;			/* a route removed meanwhile */
	if (SPI_processed == 1)
	{
		bool		isnull;

		take_failing(h);
		h->disabled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 3, &isnull));
	}
	return h;
}

/* Write the route's bookkeeping: no reload of the routes anywhere. */
static void
execute_quietly(SPIPlanPtr plan, Datum *values, int expected_rc)
{
	volatile int rc = 0;

	notifier_routes_quiet = true;
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, values, NULL, false, 0);
	}
	PG_FINALLY();
	{
		notifier_routes_quiet = false;
	}
	PG_END_TRY();
	if (rc != expected_rc)
		elog(ERROR, "updating notifier.routes failed: %s", SPI_result_code_string(rc));
}

/* Disable the route, tell pg_notifier_events, and say so in the log. */
static void
disable(int64 route_id, RouteHealth *h, const char *reason)
{
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	char		clipped[MAX_REASON_BYTES + 1];

	clip_copy(clipped, reason, sizeof(clipped));
	values[0] = Int64GetDatum(route_id);
	values[1] = CStringGetTextDatum(clipped);
	if (SPI_execute_plan(keep_plan(&disable_plan,
								   "WITH d AS (UPDATE notifier.routes"
								   "   SET disabled_at = pg_catalog.now(), disabled_reason = $2"
								   "   WHERE id OPERATOR(pg_catalog.=) $1 AND disabled_at IS NULL"
								   "   RETURNING id, disabled_reason)"
								   " SELECT notifier.route_state_changed(d.id, 'disabled', d.disabled_reason)"
								   "   FROM d",
								   2, argtypes),
						 values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "disabling a route failed");
	h->disabled = true;
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("pg_notifier route " INT64_FORMAT " disabled", route_id),
				 errdetail("Reason: %s.", clipped),
				 errhint("notifier.resume_route(" INT64_FORMAT ") sends its kept events once the endpoint is fixed.",
						 route_id)));
}

/*
 * A message of the route finished: delivered, or not, with a short bounded
 * description of the failure (the sink's RemoteMessage.summary: no URL,
 * nothing the receiver sent); gone: the receiver said it is gone for good
 * (HTTP 410).  In the worker's transaction that records the outcome,
 * connected to SPI.
 */
void
route_health_outcome(int64 route_id, bool delivered, bool gone,
					 const char *failure)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	RouteHealth *h = route_health(route_id);

	if (h->disabled)
		return;
	values[0] = Int64GetDatum(route_id);
	if (delivered)
	{
		if (h->failing_since != 0)
			execute_quietly(keep_plan(&succeeded_plan,
									  "UPDATE notifier.routes SET failing_since = NULL"
									  " WHERE id OPERATOR(pg_catalog.=) $1",
									  1, argtypes),
							values, SPI_OK_UPDATE);
		h->failing_since = 0;
		h->has_deadline = false;
		return;
	}

	if (gone)
	{
		disable(route_id, h, failure != NULL ? failure : "the receiver is gone");
		return;
	}
	if (h->failing_since == 0)
	{
		execute_quietly(keep_plan(&failing_plan,
								  "UPDATE notifier.routes"
								  " SET failing_since = COALESCE(failing_since, pg_catalog.now())"
								  " WHERE id OPERATOR(pg_catalog.=) $1"
								  " RETURNING failing_since,"
								  "   failing_since OPERATOR(pg_catalog.+) disable_after",
								  1, argtypes),
						values, SPI_OK_UPDATE_RETURNING);
		if (SPI_processed != 1)
		{
			h->disabled = true; /* removed meanwhile */
			return;
		}
		take_failing(h);
	}
	if (!h->has_deadline || GetCurrentTimestamp() < h->deadline)
		return;

	disable(route_id, h,
			psprintf("no successful delivery for disable_after since %s; last failure: %s",
					 timestamptz_to_str(h->failing_since),
					 failure != NULL ? failure : "no answer"));
}
