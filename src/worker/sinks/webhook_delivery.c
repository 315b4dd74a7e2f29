/*-------------------------------------------------------------------------
 *
 * webhook_delivery.c
 *	  Delivering notifier.deliveries to webhooks, from inside the worker's
 *	  loop: claims, outcomes, retries, scheduling.  The requests themselves
 *	  are webhook_http.c's.
 *
 * A delivery row goes pending -> in_flight (claimed, attempts + 1, in a
 * transaction committed before the request starts) -> delivered, pending
 * again (to retry at next_attempt_at) or dead.  When the worker starts,
 * rows left in_flight by a crash become pending again: delivery is at
 * least once, and a duplicate has the same webhook-id.
 *
 * A batch is one message.  On a route of batch_size > 1, the first claim of
 * rows cuts them into batches and writes each batch's key (the id of its
 * first row) on its rows, durably before any of them is sent; a retry (or
 * a resend after a crash) claims whole batches by that key.  So a
 * webhook-id always carries the same events in the same order, and an event
 * never travels under two ids: a receiver that drops repeated webhook-ids
 * (as Standard Webhooks advises) loses nothing.
 *
 * Scheduling: each webhook route has at most `concurrency` requests in
 * flight (one if ordered => 'route'), a new one claimed as soon as one
 * finishes (no batch barrier).  With ordered => 'key' a row is claimed only
 * when no earlier row of its key (order_key: a hash of the event's schema,
 * table and key, written by webhook_sink.c) is pending or in flight: the
 * events of one key go one after the other, each after the outcome of the
 * one before (its retries included), the keys side by side.  The worker knows when a route may have due rows: events
 * were written to it, a request of it finished, a retry time passed, rows
 * were redelivered; only then does it query.  A request carries one event,
 * or a batch: a JSON array of up to batch_size events and at most
 * pg_notifier.max_webhook_body_bytes (a larger event goes alone); a claim
 * holds at most pg_notifier.max_batch_bytes of events (or one larger).
 *
 * Outcome: 2xx delivered; 408, 425, 429, 5xx, other non-4xx statuses,
 * timeouts and connection errors retried after a full-jitter exponential
 * backoff (Retry-After honoured on 429/503); other 4xx dead at once; dead
 * too after max_attempts attempts.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker/sinks/webhook_delivery.h"
#include "common/extension.h"
#include "worker/worker_xact.h"
#include "pg_notifier.h"
#include "worker/sinks/webhook_http.h"
#include "worker/route_health.h"
#include "common/stats.h"

/* what the worker knows of a webhook route's rows */
typedef struct RouteState
{
	int64		route_id;		/* hash key */
	int			inflight;		/* requests in flight */
	bool		pending;		/* may have due pending rows */
	TimestampTz next_due;		/* a retry is due then; 0: none known */
	bool		retries;		/* may have rows waiting for a retry */
	bool		by_key;			/* ordered by key: an outcome may free rows */
} RouteState;

static MemoryContext delivery_cxt = NULL;	/* the states */
static MemoryContext scratch_cxt = NULL;	/* one delivery_work() call */
static HTAB *states = NULL;
static uint64 delivered_count = 0;	/* rows delivered by this process */

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_ordered_plan = NULL;
static SPIPlanPtr claim_key_plan = NULL;
static SPIPlanPtr fresh_key_plan = NULL;
static SPIPlanPtr next_retry_plan = NULL;
static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr retry_ordered_plan = NULL;
static SPIPlanPtr fresh_plan = NULL;
static SPIPlanPtr fresh_ordered_plan = NULL;
static SPIPlanPtr batch_claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr outcome_plan = NULL;

/* rows claimed at most per query */
#define MAX_CLAIM 5000

/*
 * A claim takes the due rows in id order up to pg_notifier.max_batch_bytes
 * of payload (or max_webhook_body_bytes if larger: a claim must fill a
 * request) ($3), and at least one: what the worker holds of a claim is
 * bounded by bytes as well as rows.  octet_length() of a text reads its
 * size without detoasting it.
 */
#define CLAIM_WINDOW \
	" SELECT c.id, pg_catalog.sum(pg_catalog.octet_length(c.payload::pg_catalog.text))" \
	"   OVER (ORDER BY c.id) AS upto, pg_catalog.row_number() OVER (ORDER BY c.id) AS n"
#define CLAIM_BOUND \
	"w.upto OPERATOR(pg_catalog.<=) $3 OR w.n OPERATOR(pg_catalog.=) 1"

/* the due rows of route $1, up to $2 of them and the bytes of $3 */
#define CLAIM_DUE(filter) \
	" WHERE d.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT w.id FROM (" CLAIM_WINDOW \
	"   FROM (SELECT id, payload FROM notifier.deliveries" \
	"    WHERE route_id OPERATOR(pg_catalog.=) $1" \
	"      AND status OPERATOR(pg_catalog.=) 'pending'" filter \
	"      AND next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()" \
	"    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) c" \
	"   ) w WHERE " CLAIM_BOUND "))"

/* the same for an ordered route: the first pending rows, if the first is due */
#define CLAIM_HEAD \
	" WHERE d.id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT w.id FROM (" CLAIM_WINDOW \
	"   FROM (SELECT id, payload FROM notifier.deliveries" \
	"    WHERE route_id OPERATOR(pg_catalog.=) $1" \
	"      AND status OPERATOR(pg_catalog.=) 'pending' ORDER BY id LIMIT $2) c" \
	"   ) w WHERE " CLAIM_BOUND "))" \
	"   AND (SELECT h.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()" \
	"          FROM notifier.deliveries h" \
	"         WHERE h.route_id OPERATOR(pg_catalog.=) $1 AND h.status OPERATOR(pg_catalog.=) 'pending'" \
	"         ORDER BY h.id LIMIT 1)"

/*
 * For a route ordered by key: a row may go when no earlier row of its key is
 * pending or in flight (the inner query of CLAIM_DUE reads "deliveries").
 */
#define KEY_FREE \
	" AND NOT EXISTS (SELECT FROM notifier.deliveries k" \
	"   WHERE k.route_id OPERATOR(pg_catalog.=) $1" \
	"     AND k.order_key OPERATOR(pg_catalog.=) deliveries.order_key" \
	"     AND k.id OPERATOR(pg_catalog.<) deliveries.id" \
	"     AND k.status OPERATOR(pg_catalog.=) ANY ('{pending,in_flight}'::pg_catalog.text[]))"

/* a claim: one more attempt, in flight */
#define CLAIM_SET \
	"status = 'in_flight', attempts = d.attempts OPERATOR(pg_catalog.+) 1," \
	" updated_at = pg_catalog.now()"

/* what a claim reads of a row (take_rows()) */
#define CLAIM_COLUMNS \
	"d.id, d.event_id, d.payload::pg_catalog.text, d.attempts, d.received_at"



static void
create_states(void)
{
	states = routes_hash_create("pg_notifier route states", sizeof(RouteState), delivery_cxt);
}

static void
delivery_init(void)
{
	if (delivery_cxt != NULL)
		return;
	delivery_cxt = AllocSetContextCreate(TopMemoryContext, "pg_notifier deliveries",
										 ALLOCSET_DEFAULT_SIZES);
	scratch_cxt = AllocSetContextCreate(delivery_cxt, "pg_notifier delivery scratch",
										ALLOCSET_DEFAULT_SIZES);
	create_states();
}

static RouteState *
route_state(int64 route_id)
{
	bool		found;
	RouteState *state;

	delivery_init();
	state = hash_search(states, &route_id, HASH_ENTER, &found);
	if (!found)
	{
		state->inflight = 0;
		state->pending = true;
		state->next_due = 0;
		state->retries = true;
		state->by_key = false;
	}
	return state;
}

uint64
delivery_delivered_count(void)
{
	return delivered_count;
}

void
delivery_route_has_pending(int64 route_id)
{
	route_state(route_id)->pending = true;
}

void
delivery_all_pending(void)
{
	HASH_SEQ_STATUS seq;
	RouteState *state;

	if (states == NULL)
		return;
	hash_seq_init(&seq, states);
	while ((state = hash_seq_search(&seq)) != NULL)
		state->pending = state->retries = true;
}

/*
 * A transaction of the delivery bookkeeping.  One that only claims rows
 * (pending -> in_flight) commits without waiting for its WAL flush: losing
 * it in a crash only means sending again what was about to be sent, and the
 * next durable commit (an outcome) flushes it anyway.  Outcomes wait, so
 * that after a crash only the requests in flight are sent twice.
 *
 * Its queries all have an index made for them (the partial indexes on
 * pending and in_flight rows, the primary key); a sequential scan of the
 * table, which the planner may pick for a generic plan or before the table
 * was first analyzed, costs O(rows kept) per claim, so it is ruled out.
 */
static bool
bookkeeping_xact_begin(bool durable)
{
	if (!worker_xact_begin())
	{
		worker_xact_commit();	/* the extension is gone */
		return false;
	}
	if (!durable)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	worker_xact_plan_for_indexes();
	return true;
}

/*
 * At start (or when the extension appears): requests that were in flight
 * when the worker stopped are sent again.
 */
void
delivery_resume(void)
{
	if (!bookkeeping_xact_begin(true))
		return;
	if (SPI_execute("UPDATE notifier.deliveries"
					" SET status = 'pending', updated_at = pg_catalog.now()"
					" WHERE status OPERATOR(pg_catalog.=) 'in_flight'", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "resuming deliveries failed");
	worker_xact_commit();
	delivery_all_pending();
}


/* The extension is gone: forget every request and route. */
void
delivery_stop(void)
{
	if (delivery_cxt == NULL)
		return;
	webhook_http_cancel_all();
	hash_destroy(states);
	create_states();
}





/*
 * Claim what the route may send now and start the requests.  In a
 * transaction, connected to SPI; the requests start after the commit, so
 * they are collected in *claimed.  The rows of one request are consecutive
 * and share their batch key (batch[]): the id of their first row.
 */
typedef struct Claimed
{
	Route	   *route;
	int			n;
	int			size;			/* allocated */
	int64	   *ids;
	int64	   *batch;
	char	  **event_ids;
	char	  **payloads;
	int		   *attempts;
	TimestampTz *received;
} Claimed;

/* a claimed row: its batch key, its id, its place in SPI_tuptable */
typedef struct RowKey
{
	int64		batch;
	int64		id;
	uint64		i;
} RowKey;

static int
compare_row_keys(const void *a, const void *b)
{
	const RowKey *x = a;
	const RowKey *y = b;

	if (x->batch != y->batch)
		return (x->batch > y->batch) - (x->batch < y->batch);
	return (x->id > y->id) - (x->id < y->id);
}

/*
 * Append the rows of SPI_tuptable (id, event_id, payload, attempts,
 * received_at, batch_id) to *claimed, batch by batch and in id order within
 * each (RETURNING has no order), at most max of them; a row without a batch
 * is its own.  attempts_add: 1 when the query read the rows without
 * claiming them.  Kept past SPI_finish().
 */
static void
take_rows(Claimed *claimed, uint64 max, int attempts_add)
{
	uint64		n = Min(SPI_processed, max);
	TupleDesc	tupdesc = SPI_tuptable->tupdesc;
	MemoryContext old;
	RowKey	   *keys;

	if (n == 0)
		return;
	old = MemoryContextSwitchTo(scratch_cxt);
	keys = palloc(n * sizeof(RowKey));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		b;

		keys[i].id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], tupdesc, 1, &isnull));
		b = SPI_getbinval(SPI_tuptable->vals[i], tupdesc, 6, &isnull);
		keys[i].batch = isnull ? keys[i].id : DatumGetInt64(b);
		keys[i].i = i;
	}
	qsort(keys, n, sizeof(RowKey), compare_row_keys);

	if (claimed->n + (int) n > claimed->size)
	{
		int			size = claimed->n + (int) n;

		if (claimed->size == 0)
		{
			claimed->ids = palloc(size * sizeof(int64));
			claimed->batch = palloc(size * sizeof(int64));
			claimed->event_ids = palloc(size * sizeof(char *));
			claimed->payloads = palloc(size * sizeof(char *));
			claimed->attempts = palloc(size * sizeof(int));
			claimed->received = palloc(size * sizeof(TimestampTz));
		}
		else
		{
			claimed->ids = repalloc(claimed->ids, size * sizeof(int64));
			claimed->batch = repalloc(claimed->batch, size * sizeof(int64));
			claimed->event_ids = repalloc(claimed->event_ids, size * sizeof(char *));
			claimed->payloads = repalloc(claimed->payloads, size * sizeof(char *));
			claimed->attempts = repalloc(claimed->attempts, size * sizeof(int));
			claimed->received = repalloc(claimed->received, size * sizeof(TimestampTz));
		}
		claimed->size = size;
	}
	for (uint64 k = 0; k < n; k++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[keys[k].i];
		int			c = claimed->n++;
		bool		isnull;

		claimed->ids[c] = keys[k].id;
		claimed->batch[c] = keys[k].batch;
		claimed->event_ids[c] = SPI_getvalue(tuple, tupdesc, 2);
		claimed->payloads[c] = SPI_getvalue(tuple, tupdesc, 3);
		claimed->attempts[c] = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 4, &isnull)) + attempts_add;
		claimed->received[c] = DatumGetTimestampTz(SPI_getbinval(tuple, tupdesc, 5, &isnull));
	}
	pfree(keys);
	MemoryContextSwitchTo(old);
}

/* run a claiming UPDATE ... RETURNING, take its rows */
static void
claim_update(SPIPlanPtr plan, Datum *values, Claimed *claimed)
{
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claiming deliveries failed");
	take_rows(claimed, SPI_processed, 0);
}

/* requests the route may start now */
static int
free_slots(Route *route, RouteState *state)
{
	WebhookConfig *wh = &route->webhook;

	return wh->ordered == ROUTE_ORDER_ROUTE ? (state->inflight == 0 ? 1 : 0) :
		wh->concurrency - state->inflight;
}

/*
 * may the route have rows to send now?  A paused route never has, nor one
 * disabled since the routes were loaded (route_health.c).
 */
static bool
route_due(Route *route, RouteState *state, TimestampTz now)
{
	return !route->webhook.paused && !route_health_disabled(route->id) &&
		free_slots(route, state) > 0 &&
		(state->pending || (state->next_due != 0 && state->next_due <= now));
}

/*
 * How many of the n events (n <= batch_size) the next request carries: as
 * many as fit in a body of pg_notifier.max_webhook_body_bytes (a JSON array:
 * brackets and commas), and at least one.
 */
static int
request_size(char **payloads, int n)
{
	Size		body = 2 + strlen(payloads[0]);
	int			k = 1;

	while (k < n)
	{
		Size		len = 1 + strlen(payloads[k]);

		if (body + len > (Size) notifier_max_webhook_body_bytes)
			break;
		body += len;
		k++;
	}
	return k;
}

/*
 * Claim the rows of a route of batch_size 1: each row is a request.
 * Returns whether the claim was full (more rows may be due).
 */
static bool
claim_rows(Route *route, Claimed *claimed, Datum *values, int want)
{
	Oid			argtypes[3] = {INT8OID, INT4OID, INT8OID};
	SPIPlanPtr	plan;

	if (route->webhook.ordered == ROUTE_ORDER_ROUTE)
		plan = keep_plan(&claim_ordered_plan,
						 "UPDATE notifier.deliveries d SET " CLAIM_SET
						 CLAIM_HEAD
						 " RETURNING " CLAIM_COLUMNS ","
						 "   NULL::pg_catalog.int8",
						 3, argtypes);
	else if (route->webhook.ordered == ROUTE_ORDER_KEY)
		plan = keep_plan(&claim_key_plan,
						 "UPDATE notifier.deliveries d SET " CLAIM_SET
						 CLAIM_DUE(KEY_FREE)
						 " RETURNING " CLAIM_COLUMNS ","
						 "   NULL::pg_catalog.int8",
						 3, argtypes);
	else
		plan = keep_plan(&claim_plan,
						 "UPDATE notifier.deliveries d SET " CLAIM_SET
						 CLAIM_DUE("")
						 " RETURNING " CLAIM_COLUMNS ","
						 "   NULL::pg_catalog.int8",
						 3, argtypes);
	claim_update(plan, values, claimed);
	return claimed->n == want;
}

/*
 * Claim the messages of a route of batch_size > 1: a batch is one message.
 * First the batches due for a retry, whole, by their key (as they were
 * first sent); then, with the slots left, rows never sent, cut into
 * batches here (batch_size events, max_webhook_body_bytes) and claimed with
 * their batch key written.  That claim must be durable before its requests
 * start (*durable): were it lost in a crash, the rows would be batched
 * again, differently, under the same webhook-id.  An ordered route sends
 * its head first, whatever it is.  Returns whether the claim was full.
 */
static bool
claim_batches(Route *route, Claimed *claimed, Datum *values, int slots,
			  bool retries, bool *durable)
{
	WebhookConfig *wh = &route->webhook;
	Oid			argtypes[3] = {INT8OID, INT4OID, INT8OID};
	Oid			batch_types[2] = {INT8ARRAYOID, INT8ARRAYOID};
	SPIPlanPtr	plan;
	int			want;
	int			from;
	int			first;
	Datum	   *idd;
	Datum	   *batchd;
	Datum		bvalues[2];

	if (retries)
	{
		int			nbatches = 0;

		values[1] = Int32GetDatum(slots);
		if (wh->ordered == ROUTE_ORDER_ROUTE)
			plan = keep_plan(&retry_ordered_plan,
							 "UPDATE notifier.deliveries d SET " CLAIM_SET
							 " WHERE d.route_id OPERATOR(pg_catalog.=) $1 AND d.status OPERATOR(pg_catalog.=) 'pending'"
							 "   AND d.batch_id IS NOT NULL AND d.batch_id OPERATOR(pg_catalog.=)"
							 "   (SELECT CASE WHEN h.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
							 "           THEN h.batch_id END"
							 "      FROM notifier.deliveries h"
							 "     WHERE h.route_id OPERATOR(pg_catalog.=) $1 AND h.status OPERATOR(pg_catalog.=) 'pending'"
							 "     ORDER BY h.id LIMIT 1)"
							 " RETURNING " CLAIM_COLUMNS ","
							 "   d.batch_id",
							 3, argtypes);
		else
			plan = keep_plan(&retry_plan,
							 "UPDATE notifier.deliveries d SET " CLAIM_SET
							 " WHERE d.route_id OPERATOR(pg_catalog.=) $1 AND d.status OPERATOR(pg_catalog.=) 'pending'"
							 "   AND d.batch_id IS NOT NULL AND d.batch_id OPERATOR(pg_catalog.=) ANY (ARRAY("
							 "     SELECT DISTINCT h.batch_id FROM notifier.deliveries h"
							 "      WHERE h.route_id OPERATOR(pg_catalog.=) $1 AND h.status OPERATOR(pg_catalog.=) 'pending'"
							 "        AND h.batch_id IS NOT NULL"
							 "        AND h.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
							 "      ORDER BY h.batch_id LIMIT $2))"
							 " RETURNING " CLAIM_COLUMNS ","
							 "   d.batch_id",
							 3, argtypes);
		claim_update(plan, values, claimed);
		for (int i = 0; i < claimed->n; i++)
			nbatches += i == 0 || claimed->batch[i] != claimed->batch[i - 1];
		slots -= nbatches;
		if (slots <= 0)
			return true;
	}

	/* rows never sent, in id order */
	want = Min(slots * wh->batch_size, MAX_CLAIM);
	values[1] = Int32GetDatum(want);
	if (wh->ordered == ROUTE_ORDER_ROUTE)
		plan = keep_plan(&fresh_ordered_plan,
						 "SELECT " CLAIM_COLUMNS ","
						 "   d.batch_id FROM notifier.deliveries d"
						 CLAIM_HEAD
						 " ORDER BY d.id FOR UPDATE",
						 3, argtypes);
	else if (wh->ordered == ROUTE_ORDER_KEY)
		plan = keep_plan(&fresh_key_plan,
						 "SELECT " CLAIM_COLUMNS ","
						 "   d.batch_id FROM notifier.deliveries d"
						 CLAIM_DUE(" AND batch_id IS NULL" KEY_FREE)
						 " ORDER BY d.id",
						 3, argtypes);
	else
		plan = keep_plan(&fresh_plan,
						 "SELECT " CLAIM_COLUMNS ","
						 "   d.batch_id FROM notifier.deliveries d"
						 CLAIM_DUE(" AND batch_id IS NULL")
						 " ORDER BY d.id",
						 3, argtypes);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "claiming deliveries failed");

	/* an ordered route stops at a row already sent: its batch goes first */
	{
		uint64		n = 0;

		while (n < SPI_processed)
		{
			bool		isnull;

			(void) SPI_getbinval(SPI_tuptable->vals[n], SPI_tuptable->tupdesc, 6, &isnull);
			if (!isnull)
				break;
			n++;
		}
		first = claimed->n;
		take_rows(claimed, n, 1);
		if (n < SPI_processed)
			return false;
	}
	if (claimed->n == first)
		return false;

	/* cut into batches, write their keys */
	idd = MemoryContextAlloc(scratch_cxt, (claimed->n - first) * sizeof(Datum));
	batchd = MemoryContextAlloc(scratch_cxt, (claimed->n - first) * sizeof(Datum));
	for (from = first; from < claimed->n;)
	{
		int			k = request_size(claimed->payloads + from,
									 Min(wh->batch_size, claimed->n - from));

		for (int i = from; i < from + k; i++)
		{
			claimed->batch[i] = claimed->ids[from];
			idd[i - first] = Int64GetDatum(claimed->ids[i]);
			batchd[i - first] = Int64GetDatum(claimed->ids[from]);
		}
		from += k;
	}
	bvalues[0] = PointerGetDatum(construct_array(idd, claimed->n - first, INT8OID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	bvalues[1] = PointerGetDatum(construct_array(batchd, claimed->n - first, INT8OID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	plan = keep_plan(&batch_claim_plan,
					 "UPDATE notifier.deliveries d SET " CLAIM_SET ", batch_id = b.batch_id"
					 "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS b(id, batch_id)"
					 " WHERE d.id OPERATOR(pg_catalog.=) b.id",
					 2, batch_types);
	if (SPI_execute_plan(plan, bvalues, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "claiming deliveries failed");
	*durable = true;
	return claimed->n - first == want;
}

/*
 * When is the route due next: its first pending row's next attempt, or
 * with later_only the first one after now (a route ordered by key: rows due
 * but waiting for their key are not, an outcome frees them).  The route has
 * nothing due now.
 */
static void
read_next_due(RouteState *state, Datum *values, bool later_only)
{
	Oid			argtypes[1] = {INT8OID};
	bool		isnull;
	Datum		d;
	SPIPlanPtr	plan;

	if (later_only)
		plan = keep_plan(&next_retry_plan,
						 "SELECT pg_catalog.min(next_attempt_at) FROM notifier.deliveries"
						 " WHERE route_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'pending'"
						 "   AND next_attempt_at OPERATOR(pg_catalog.>) pg_catalog.now()",
						 1, argtypes);
	else
		plan = keep_plan(&next_due_plan,
						 "SELECT pg_catalog.min(next_attempt_at) FROM notifier.deliveries"
						 " WHERE route_id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.=) 'pending'",
						 1, argtypes);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading deliveries failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	state->pending = false;
	state->next_due = isnull ? 0 : DatumGetTimestampTz(d);
	state->retries = !isnull;
}

static void
claim(Route *route, RouteState *state, Claimed *claimed, bool *durable)
{
	WebhookConfig *wh = &route->webhook;
	int			slots = free_slots(route, state);
	int			want = Min(slots * wh->batch_size, MAX_CLAIM);
	Datum		values[3];
	bool		full;

	claimed->route = route;
	if (want <= 0)
		return;

	values[0] = Int64GetDatum(route->id);
	values[1] = Int32GetDatum(want);
	values[2] = Int64GetDatum(Max(notifier_max_batch_bytes, notifier_max_webhook_body_bytes));
	if (wh->batch_size > 1)
		full = claim_batches(route, claimed, values, slots, state->retries, durable);
	else
		full = claim_rows(route, claimed, values, want);

	/*
	 * Ordered by key: rows wait for the outcome of their key's previous one,
	 * which makes the route due again (record_outcomes()).  Until then only a
	 * retry coming due does; rows claimed: more may be free.
	 */
	if (wh->ordered == ROUTE_ORDER_KEY)
	{
		state->by_key = true;
		if (claimed->n > 0)
			state->pending = true;
		else
			read_next_due(state, values, true);
	}

	/* as many as wanted: more may be due */
	else if (full)
		state->pending = true;

	/*
	 * Fewer than wanted: nothing else is due, unless the claim was cut by
	 * bytes; when is the next retry (or the next row)?  (Only worth a query
	 * when some row may be waiting.)
	 */
	else if (!state->retries && claimed->n == 0)
	{
		state->pending = false;
		state->next_due = 0;
	}
	else
		read_next_due(state, values, false);
}

/* full jitter: a random wait up to min(max, base * 2^(attempt - 1)) */
static long
backoff_ms(const Request *req)
{
	double		ceiling = notifier_retry_base_ms * pow(2.0, Max(req->attempt - 1, 0));

	if (req->retry_after_ms >= 0 &&
		(req->http_status == 429 || req->http_status == 503))
		return Min(req->retry_after_ms, (long) notifier_retry_max_ms);
	ceiling = Min(ceiling, (double) notifier_retry_max_ms);
#if PG_VERSION_NUM >= 150000
	return (long) (pg_prng_double(&pg_global_prng_state) * ceiling);
#else
	return (long) (random() / (double) MAX_RANDOM_VALUE * ceiling);
#endif
}

typedef enum Outcome
{
	OUTCOME_DELIVERED,
	OUTCOME_RETRY,
	OUTCOME_DEAD
} Outcome;

static Outcome
classify(const Request *req)
{
	long		s = req->http_status;

	/* pg_notifier.denied_networks: retrying cannot help */
	if (req->result != CURLE_OK && req->address_denied)
		return OUTCOME_DEAD;
	if (req->result != CURLE_OK)
		return OUTCOME_RETRY;
	if (s >= 200 && s < 300)
		return OUTCOME_DELIVERED;
	if (s == 408 || s == 425 || s == 429)
		return OUTCOME_RETRY;
	if (s >= 400 && s < 500)
		return OUTCOME_DEAD;
	return OUTCOME_RETRY;
}

/*
 * Write the outcome of the finished requests, in one transaction, and
 * count them.
 */
static void
record_outcomes(void)
{
	static const char *const status_name[] = {"delivered", "retry", "dead"};
	Oid			argtypes[6] = {INT8ARRAYOID, TEXTOID, INT4OID, TEXTOID, INT8OID, INT4OID};
	SPIPlanPtr	plan;
	Request    *req;

	if (!bookkeeping_xact_begin(true))
		return;
	plan = keep_plan(&outcome_plan,
					 "UPDATE notifier.deliveries SET"
					 " status = CASE WHEN $2 OPERATOR(pg_catalog.<>) 'retry' THEN $2"
					 "   WHEN attempts OPERATOR(pg_catalog.>=) $6 THEN 'dead' ELSE 'pending' END,"
					 " next_attempt_at = CASE WHEN $2 OPERATOR(pg_catalog.=) 'retry'"
					 "   THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
					 "        ($5::pg_catalog.float8 OPERATOR(pg_catalog.*) interval '1 millisecond')"
					 "   ELSE next_attempt_at END,"
					 " last_http_status = $3, last_error = $4,"
					 " updated_at = pg_catalog.clock_timestamp(),"
					 " delivered_at = CASE WHEN $2 OPERATOR(pg_catalog.=) 'delivered'"
					 "   THEN pg_catalog.clock_timestamp() END"
					 " WHERE id OPERATOR(pg_catalog.=) ANY ($1) AND status OPERATOR(pg_catalog.=) 'in_flight'"
					 " RETURNING status",
					 6, argtypes);

	while ((req = webhook_http_next_finished()) != NULL)
	{
		RouteState *state = route_state(req->route_id);
		Outcome		outcome = classify(req);
		long		delay = outcome == OUTCOME_RETRY ? backoff_ms(req) : 0;
		char	   *error = NULL;
		Datum	   *idd = palloc(req->n * sizeof(Datum));
		Datum		values[6];
		char		nulls[6] = "      ";
		RouteDelivery rd;
		double	   *latencies = palloc(req->n * sizeof(double));

		if (req->result != CURLE_OK && req->address_denied)
			error = psprintf("address denied: %s is in pg_notifier.denied_networks",
							 req->denied_host);
		else if (req->result != CURLE_OK)
			error = psprintf("%s%s%s", curl_easy_strerror(req->result),
							 req->errbuf[0] ? ": " : "", req->errbuf);
		else if (outcome != OUTCOME_DELIVERED)
			error = psprintf("HTTP status %ld", req->http_status);

		for (int i = 0; i < req->n; i++)
			idd[i] = Int64GetDatum(req->ids[i]);
		values[0] = PointerGetDatum(construct_array(idd, req->n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[1] = CStringGetTextDatum(status_name[outcome]);
		values[2] = Int32GetDatum((int32) req->http_status);
		nulls[2] = req->result != CURLE_OK ? 'n' : ' ';
		values[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
		nulls[3] = error ? ' ' : 'n';
		values[4] = Int64GetDatum(delay);
		values[5] = Int32GetDatum(req->max_attempts);
		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "recording a delivery failed");

		memset(&rd, 0, sizeof(rd));
		rd.route_id = req->route_id;
		rd.http_status = req->result != CURLE_OK ? 0 : (int) req->http_status;
		rd.error = error;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *status = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

			if (strcmp(status, "delivered") == 0)
				rd.delivered++;
			else if (strcmp(status, "pending") == 0)
				rd.retried++;
			else
				rd.dead++;
		}
		if (outcome == OUTCOME_DELIVERED)
		{
			for (int i = 0; i < req->n; i++)
				latencies[i] = (req->finished_at - req->received[i]) / 1000.0;
			rd.latencies_ms = latencies;
			rd.nlatencies = req->n;
		}
		stats_route_delivery(MyDatabaseId, &rd, req->finished_at);
		delivered_count += rd.delivered;
		/* 410 Gone, disable_after: disable the route */
		route_health_outcome(req->route_id, outcome == OUTCOME_DELIVERED,
							 (int) rd.http_status,
							 req->address_denied ? "address denied" :
							 curl_easy_strerror(req->result));

		/*
		 * A slot is free: the route is due again if its last claim was full
		 * (pending is still true) or a retry comes due.
		 */
		state->inflight--;
		if (state->by_key)
			state->pending = true;
		if (rd.retried > 0)
		{
			TimestampTz due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

			state->retries = true;
			if (state->next_due == 0 || due < state->next_due)
				state->next_due = due;
		}
		webhook_http_free(req);
	}

	worker_xact_commit();
}



/*
 * Record what finished, claim what may be sent, start it.  Returns when a
 * retry is next due (0: none known).
 */
TimestampTz
delivery_work(RouteTable *routes)
{
	TimestampTz now;
	TimestampTz next = 0;
	Claimed    *claimed;
	int			nclaimed = 0;
	bool		any = false;
	bool		durable = false;

	if (routes == NULL)
		return 0;
	delivery_init();
	if (webhook_http_any_finished())
		record_outcomes();

	now = GetCurrentTimestamp();
	for (int i = 0; i < routes->nroutes && !any; i++)
		any = routes->routes[i].kind == ROUTE_WEBHOOK &&
			route_due(&routes->routes[i], route_state(routes->routes[i].id), now);

	if (any)
	{
		pgstat_report_activity(STATE_RUNNING, "claiming deliveries");
		claimed = MemoryContextAllocZero(scratch_cxt, routes->nroutes * sizeof(Claimed));
		if (!bookkeeping_xact_begin(false))
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			return now;			/* the extension is gone */
		}
		for (int i = 0; i < routes->nroutes; i++)
		{
			Route	   *route = &routes->routes[i];
			RouteState *state;

			if (route->kind != ROUTE_WEBHOOK ||
				!route_due(route, state = route_state(route->id), now))
				continue;
			if (state->next_due != 0 && state->next_due <= now)
				state->next_due = 0;
			claim(route, state, &claimed[nclaimed++], &durable);
		}
		if (durable)
			(void) set_config_option("synchronous_commit", "on", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);
		worker_xact_commit();
		pgstat_report_activity(STATE_IDLE, NULL);

		for (int c = 0; c < nclaimed; c++)
		{
			Claimed    *cl = &claimed[c];

			for (int from = 0; from < cl->n;)
			{
				int			k = 1;

				while (from + k < cl->n && cl->batch[from + k] == cl->batch[from])
					k++;

				webhook_http_start(cl->route, cl->ids + from, cl->event_ids + from,
								   cl->payloads + from, cl->attempts + from,
								   cl->received + from, k);
				route_state(cl->route->id)->inflight++;
				from += k;
			}
		}
		MemoryContextReset(scratch_cxt);
		webhook_http_progress();
	}

	/* when to come back: at once, or at the first retry */
	if (webhook_http_any_finished())
		return now;
	for (int i = 0; i < routes->nroutes; i++)
	{
		Route	   *route = &routes->routes[i];
		RouteState *state;

		if (route->kind != ROUTE_WEBHOOK || route->webhook.paused)
			continue;
		state = route_state(route->id);
		if (route_due(route, state, now))
			return now;
		if (state->next_due != 0 && (next == 0 || state->next_due < next))
			next = state->next_due;
	}
	return next;
}
