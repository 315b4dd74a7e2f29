/*-------------------------------------------------------------------------
 *
 * remote_delivery.c
 *	  The delivery engine of the remote sinks (webhook; NATS JetStream
 *	  next), inside the worker's loop: notifier.deliveries, claims,
 *	  outcomes, retries, scheduling.  Moving the messages is the sinks'
 *	  (remote_sink.h; webhook_http.c).
 *
 * Why one engine: what makes delivery at least once, ordered, bounded and
 * observable is the same whatever the receiver speaks, and it is the hard
 * part; a sink only starts a message and says how it ended: delivered,
 * retry (after a wait it may name) or dead.  Every remote sink gets the
 * same guarantees from the same code.
 *
 * The worker writes the events of a remote route into notifier.deliveries
 * (remote_delivery_write()), in the transaction that drained them; from
 * then on an event is delivered at least once, whatever crashes or
 * restarts come.  A delivery row goes pending -> in_flight (claimed,
 * attempts + 1, in a transaction committed before the message starts) ->
 * delivered, pending again (to retry at next_attempt_at) or dead.  When
 * the worker starts, rows left in_flight by a crash become pending again:
 * delivery is at least once, and a duplicate has the same id (the event's
 * "id", the webhook-id).
 *
 * A batch is one message.  On a route of batch_size > 1, the first claim of
 * rows cuts them into batches and writes each batch's key (the id of its
 * first row) on its rows, durably before any of them is sent; a retry (or
 * a resend after a crash) claims whole batches by that key.  So an id
 * always carries the same events in the same order, and an event never
 * travels under two ids: a receiver that drops repeated ids (as Standard
 * Webhooks advises) loses nothing.
 *
 * Scheduling: each remote route has at most `concurrency` messages in
 * flight (one if ordered => 'route'), a new one claimed as soon as one
 * finishes (no batch barrier).  With ordered => 'key' a row is claimed only
 * when no earlier row of its key (order_key: a hash of the event's schema,
 * table and key) is pending or in flight: the events of one key go one
 * after the other, each after the outcome of the one before (its retries
 * included), the keys side by side.  The worker knows when a route may have
 * due rows: events were written to it, a message of it finished, a retry
 * time passed, rows were redelivered; only then does it query.  A message
 * carries one event or a batch of up to batch_size events, as many as the
 * sink takes in one message (message_events(); a larger event goes alone);
 * a claim holds at most pg_notifier.max_batch_bytes of events (or one
 * larger).
 *
 * Outcome: what the sink says.  Delivered; dead (a dead letter at once);
 * retry, after the wait the receiver asked for (capped at
 * pg_notifier.retry_max_ms) or else a full-jitter exponential backoff; dead
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
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "common/extension.h"
#include "common/payloads.h"
#include "common/stats.h"
#include "pg_notifier.h"
#include "worker/sinks/remote_delivery.h"
#include "worker/sinks/remote_sink.h"
#include "worker/route_health.h"
#include "worker/worker_xact.h"

/* what the worker knows of a remote route's rows */
typedef struct RouteState
{
	int64		route_id;		/* hash key */
	int			inflight;		/* requests in flight */
	bool		pending;		/* may have due pending rows */
	TimestampTz next_due;		/* a retry is due then; 0: none known */
	bool		retries;		/* may have rows waiting for a retry */
	bool		by_key;			/* ordered by key: an outcome may free rows */
	double		tokens;			/* max_per_second: messages it may start */
	TimestampTz refilled_at;	/* tokens counted until then; 0: never */
} RouteState;

/*
 * max_per_second is a token bucket holding a tenth of a second of messages
 * (at least one): a route that waited may start a few at once, never more,
 * so the rate holds over any window longer than that.
 */
#define RATE_BURST_SECONDS 0.1

static MemoryContext delivery_cxt = NULL;	/* the states */
static MemoryContext scratch_cxt = NULL;	/* one delivery_work() call */
static MemoryContext messages_cxt = NULL;	/* the messages in flight */
static HTAB *states = NULL;
static dlist_head finished = DLIST_STATIC_INIT(finished);	/* messages */
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
static SPIPlanPtr insert_plan = NULL;

/* every remote sink, for waiting on all of them */
static const RemoteSink *const sinks[] = {&webhook_sink, &nats_sink};

/* rows claimed at most per query */
#define MAX_CLAIM 5000

/*
 * A claim takes the due rows in id order up to pg_notifier.max_batch_bytes
 * of payload (or the sink's largest message if larger: a claim must fill a
 * message) ($3), and at least one: what the worker holds of a claim is
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
 * OFFSET 0 keeps the test a subquery run per candidate row, which looks up
 * its key and id in deliveries_order_key_idx: as an anti-join, a generic
 * plan made while the table looked empty (never analyzed) read every entry
 * of the route in that index for each candidate row -- a claim cost
 * O(backlog) per row it stepped over (98 events/s over 10,000 keys).
 */
#define KEY_FREE \
	" AND NOT EXISTS (SELECT FROM notifier.deliveries k" \
	"   WHERE k.route_id OPERATOR(pg_catalog.=) $1" \
	"     AND k.order_key OPERATOR(pg_catalog.=) deliveries.order_key" \
	"     AND k.id OPERATOR(pg_catalog.<) deliveries.id" \
	"     AND k.status OPERATOR(pg_catalog.=) ANY ('{pending,in_flight}'::pg_catalog.text[])" \
	"   OFFSET 0)"

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
	messages_cxt = AllocSetContextCreate(delivery_cxt, "pg_notifier messages",
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
		state->refilled_at = 0;
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

/* the id of an event (the webhook-id): its "id", NULL for other payloads */
static Datum
event_id(const char *payload, bool *isnull)
{
	char	   *id = payload_event_id(payload);

	*isnull = (id == NULL);
	return id ? CStringGetTextDatum(id) : (Datum) 0;
}

/*
 * The events of a remote route, into notifier.deliveries, in the
 * transaction that drained them: payloads (JSON texts, in order) are what is
 * sent; each row keeps the event's id and, for a route ordered by key, the
 * hash of the event's schema, table and key, both of events[i], the event
 * the payload was made from (the same text unless the route has a
 * transform: route_shape.c).
 */
void
remote_delivery_write(Route *route, char **payloads, char **events_in,
					  int npayloads, TimestampTz received_at)
{
	static const Oid insert_argtypes[] = {
		INT8OID, TEXTARRAYOID, TIMESTAMPTZOID, TEXTARRAYOID, BOOLOID, TEXTARRAYOID
	};
	Datum	   *events = palloc(npayloads * sizeof(Datum));
	Datum	   *ids = palloc(npayloads * sizeof(Datum));
	bool	   *id_nulls = palloc(npayloads * sizeof(bool));
	int			dims[1] = {npayloads};
	int			lbs[1] = {1};
	Datum		values[6];
	char		nulls[6] = "      ";
	int			rc;

	keep_plan(&insert_plan,
			  "INSERT INTO notifier.deliveries (route_id, event_id, payload, received_at, order_key)"
			  " SELECT $1, e, j, $3,"
			  "   CASE WHEN $5 THEN pg_catalog.hashtextextended(pg_catalog.concat_ws(' ',"
			  "     k OPERATOR(pg_catalog.->>) 'schema', k OPERATOR(pg_catalog.->>) 'table',"
			  "     (k OPERATOR(pg_catalog.->) 'key')::pg_catalog.text), 0) END"
			  " FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($4),"
			  "   pg_catalog.unnest($6)) AS u(p, e, o),"
			  "   LATERAL (SELECT p::pg_catalog.json AS j, COALESCE(o, p)::pg_catalog.json AS k) x",
			  6, insert_argtypes);

	for (int i = 0; i < npayloads; i++)
	{
		events[i] = CStringGetTextDatum(payloads[i]);
		ids[i] = event_id(events_in[i], &id_nulls[i]);
	}
	values[0] = Int64GetDatum(route->id);
	values[1] = PointerGetDatum(construct_array(events, npayloads, TEXTOID,
												-1, false, TYPALIGN_INT));
	values[2] = TimestampTzGetDatum(received_at);
	values[3] = PointerGetDatum(construct_md_array(ids, id_nulls, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));

	values[4] = BoolGetDatum(route->remote.ordered == ROUTE_ORDER_KEY);
	/* the events, when the payloads were made from them (a transform) */
	if (events_in != payloads)
	{
		for (int i = 0; i < npayloads; i++)
			events[i] = CStringGetTextDatum(events_in[i]);
		values[5] = PointerGetDatum(construct_array(events, npayloads, TEXTOID,
													-1, false, TYPALIGN_INT));
	}
	else
		nulls[5] = 'n';

	rc = SPI_execute_plan(insert_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT || SPI_processed != (uint64) npayloads)
		elog(ERROR, "writing %d deliveries of route " INT64_FORMAT " failed: %s",
			 npayloads, route->id, SPI_result_code_string(rc));

	delivery_route_has_pending(route->id);
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
	plan_for_indexes(GUC_ACTION_LOCAL, false);
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


/* The extension is gone: forget every message and route. */
void
delivery_stop(void)
{
	if (delivery_cxt == NULL)
		return;
	for (int i = 0; i < lengthof(sinks); i++)
		sinks[i]->cancel_all();
	dlist_init(&finished);
	MemoryContextReset(messages_cxt);
	hash_destroy(states);
	create_states();
}

const RemoteSink *
remote_sink_of(const Route *route)
{
	switch (route->kind)
	{
		case ROUTE_WEBHOOK:
			return &webhook_sink;
		case ROUTE_NATS:
			return &nats_sink;
		case ROUTE_QUEUE:
			break;
	}
	return NULL;
}

/* A sink is done with msg: its outcome is recorded by the next delivery_work(). */
void
remote_delivery_finished(RemoteMessage *msg)
{
	dlist_push_tail(&finished, &msg->node);
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

/* The tokens of the route's max_per_second bucket, refilled up to now. */
static double
rate_tokens(Route *route, RouteState *state, TimestampTz now)
{
	double		rate = route->remote.max_per_second;
	double		burst = Max(1.0, rate * RATE_BURST_SECONDS);

	if (state->refilled_at == 0)
		state->tokens = burst;
	else if (now > state->refilled_at)
		state->tokens = Min(burst, state->tokens +
							(now - state->refilled_at) / (double) USECS_PER_SEC * rate);
	state->tokens = Min(state->tokens, burst);	/* the rate was lowered */
	if (now > state->refilled_at)
		state->refilled_at = now;
	return state->tokens;
}

/* messages the route may have in flight besides those it has */
static int
concurrency_slots(Route *route, RouteState *state)
{
	RemoteConfig *rc = &route->remote;

	return rc->ordered == ROUTE_ORDER_ROUTE ? (state->inflight == 0 ? 1 : 0) :
		rc->concurrency - state->inflight;
}

/* messages the route may start now: its concurrency, its max_per_second */
static int
free_slots(Route *route, RouteState *state, TimestampTz now)
{
	int			slots = concurrency_slots(route, state);

	if (route->remote.max_per_second > 0 && slots > 0)
		slots = Min(slots, (int) floor(rate_tokens(route, state, now)));
	return slots;
}

/*
 * When a route that has something to send and a free slot, but no token,
 * gets its next token; 0: it is not held back by its max_per_second.
 */
static TimestampTz
rate_due(Route *route, RouteState *state, TimestampTz now)
{
	double		rate = route->remote.max_per_second;

	if (rate <= 0 || route->remote.paused || concurrency_slots(route, state) <= 0 ||
		!(state->pending || (state->next_due != 0 && state->next_due <= now)) ||
		rate_tokens(route, state, now) >= 1)
		return 0;
	return state->refilled_at +
		(int64) ceil((1 - state->tokens) / rate * USECS_PER_SEC);
}

/*
 * may the route have rows to send now?  A paused route never has, nor one
 * disabled since the routes were loaded (route_health.c).
 */
static bool
route_due(Route *route, RouteState *state, TimestampTz now)
{
	return !route->remote.paused && !route_health_disabled(route->id) &&
		free_slots(route, state, now) > 0 &&
		(state->pending || (state->next_due != 0 && state->next_due <= now));
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

	if (route->remote.ordered == ROUTE_ORDER_ROUTE)
		plan = keep_plan(&claim_ordered_plan,
						 "UPDATE notifier.deliveries d SET " CLAIM_SET
						 CLAIM_HEAD
						 " RETURNING " CLAIM_COLUMNS ","
						 "   NULL::pg_catalog.int8",
						 3, argtypes);
	else if (route->remote.ordered == ROUTE_ORDER_KEY)
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
 * batches here (batch_size events, as many as the sink's message takes)
 * and claimed with
 * their batch key written.  That claim must be durable before its requests
 * start (*durable): were it lost in a crash, the rows would be batched
 * again, differently, under the same id.  An ordered route sends
 * its head first, whatever it is.  Returns whether the claim was full.
 */
static bool
claim_batches(Route *route, Claimed *claimed, Datum *values, int slots,
			  bool retries, bool *durable)
{
	RemoteConfig *rc = &route->remote;
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
		if (rc->ordered == ROUTE_ORDER_ROUTE)
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
	want = Min(slots * rc->batch_size, MAX_CLAIM);
	values[1] = Int32GetDatum(want);
	if (rc->ordered == ROUTE_ORDER_ROUTE)
		plan = keep_plan(&fresh_ordered_plan,
						 "SELECT " CLAIM_COLUMNS ","
						 "   d.batch_id FROM notifier.deliveries d"
						 CLAIM_HEAD
						 " ORDER BY d.id FOR UPDATE",
						 3, argtypes);
	else if (rc->ordered == ROUTE_ORDER_KEY)
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
		int			k = remote_sink_of(route)->message_events(claimed->payloads + from,
															  Min(rc->batch_size, claimed->n - from));

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
	/* not read-only: it must see the outcomes this transaction wrote */
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading deliveries failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	state->pending = false;
	state->next_due = isnull ? 0 : DatumGetTimestampTz(d);
	state->retries = !isnull;
}

static void
claim(Route *route, RouteState *state, Claimed *claimed, bool *durable,
	  TimestampTz now)
{
	RemoteConfig *rc = &route->remote;
	int			slots = free_slots(route, state, now);
	int			want = Min(slots * rc->batch_size, MAX_CLAIM);
	Datum		values[3];
	bool		full;

	claimed->route = route;
	if (want <= 0)
		return;

	values[0] = Int64GetDatum(route->id);
	values[1] = Int32GetDatum(want);
	values[2] = Int64GetDatum(Max((Size) notifier_max_batch_bytes,
								  remote_sink_of(route)->max_message_bytes()));
	if (rc->batch_size > 1)
		full = claim_batches(route, claimed, values, slots, state->retries, durable);
	else
		full = claim_rows(route, claimed, values, want);

	/*
	 * Ordered by key: rows wait for the outcome of their key's previous one,
	 * which makes the route due again (record_outcomes()).  Until then only a
	 * retry coming due does; rows claimed: more may be free.
	 */
	if (rc->ordered == ROUTE_ORDER_KEY)
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

/*
 * The wait before a retry: what the receiver asked for, or full jitter, a
 * random wait up to min(max, base * 2^(attempt - 1)).
 */
static long
backoff_ms(const RemoteMessage *msg)
{
	double		ceiling = notifier_retry_base_ms * pow(2.0, Max(msg->attempt - 1, 0));

	if (msg->retry_after_ms >= 0)
		return Min(msg->retry_after_ms, (long) notifier_retry_max_ms);
	ceiling = Min(ceiling, (double) notifier_retry_max_ms);
#if PG_VERSION_NUM >= 150000
	return (long) (pg_prng_double(&pg_global_prng_state) * ceiling);
#else
	return (long) (random() / (double) MAX_RANDOM_VALUE * ceiling);
#endif
}

/*
 * Write the outcome of the finished messages, in one statement, and count
 * them.  In delivery_work()'s transaction, which is durable then.
 */
static void
record_outcomes(void)
{
	static const char *const status_name[] = {"delivered", "retry", "dead"};
	Oid			argtypes[7] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
	TEXTARRAYOID, INT8ARRAYOID, INT4ARRAYOID};
	SPIPlanPtr	plan;
	dlist_iter	iter;
	int			nmsgs = 0;
	int			nrows = 0;
	RemoteMessage **msgs;
	long	   *delays;
	RouteDelivery *rds;
	Datum	   *cols[7];
	bool	   *status_nulls;
	bool	   *error_nulls;
	Datum		values[7];
	int			dims[1];
	int			lbs[1] = {1};
	int			row = 0;

	/*
	 * One statement for every finished message: a row of each message's
	 * events, with the message's outcome.  The rows are found by their
	 * primary key alone (a join on it): a partial index on status would be
	 * read whole, and on a busy table it holds the entries of every row that
	 * was ever in that status and is not vacuumed yet.  So the status is
	 * tested in a CASE, which no index predicate can be proved from: written
	 * as "status = 'in_flight'", a generic plan made while the table looked
	 * empty (never analyzed) chose deliveries_in_flight_idx, and each outcome
	 * took up to 120 ms on a backlog (commit -> 2xx p50 251 ms at 5,000
	 * events/s).
	 */
	plan = keep_plan(&outcome_plan,
					 "UPDATE notifier.deliveries d SET"
					 " status = CASE WHEN r.result OPERATOR(pg_catalog.<>) 'retry' THEN r.result"
					 "   WHEN d.attempts OPERATOR(pg_catalog.>=) r.max_attempts THEN 'dead' ELSE 'pending' END,"
					 " next_attempt_at = CASE WHEN r.result OPERATOR(pg_catalog.=) 'retry'"
					 "   THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
					 "        (r.delay::pg_catalog.float8 OPERATOR(pg_catalog.*) interval '1 millisecond')"
					 "   ELSE d.next_attempt_at END,"
					 " last_http_status = r.http_status, last_error = r.error,"
					 " updated_at = pg_catalog.clock_timestamp(),"
					 " delivered_at = CASE WHEN r.result OPERATOR(pg_catalog.=) 'delivered'"
					 "   THEN pg_catalog.clock_timestamp() END"
					 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
					 "   pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),"
					 "   pg_catalog.unnest($7)) AS r(id, msg, result, http_status, error, delay, max_attempts)"
					 " WHERE d.id OPERATOR(pg_catalog.=) r.id"
					 "   AND CASE WHEN d.status OPERATOR(pg_catalog.=) 'in_flight' THEN true END"
					 " RETURNING r.msg, d.status",
					 7, argtypes);

	dlist_foreach(iter, &finished)
	{
		RemoteMessage *msg = dlist_container(RemoteMessage, node, iter.cur);

		nmsgs++;
		nrows += msg->n;
	}
	msgs = palloc(nmsgs * sizeof(RemoteMessage *));
	delays = palloc(nmsgs * sizeof(long));
	rds = palloc0(nmsgs * sizeof(RouteDelivery));
	for (int c = 0; c < 7; c++)
		cols[c] = palloc(nrows * sizeof(Datum));
	status_nulls = palloc(nrows * sizeof(bool));
	error_nulls = palloc(nrows * sizeof(bool));
	nmsgs = 0;
	while (!dlist_is_empty(&finished))
	{
		RemoteMessage *msg = dlist_container(RemoteMessage, node,
											 dlist_pop_head_node(&finished));
		Datum		result = CStringGetTextDatum(status_name[msg->result]);
		Datum		error = msg->reason ? CStringGetTextDatum(msg->reason) : (Datum) 0;

		delays[nmsgs] = msg->result == REMOTE_RETRY ? backoff_ms(msg) : 0;
		for (int i = 0; i < msg->n; i++, row++)
		{
			cols[0][row] = Int64GetDatum(msg->ids[i]);
			cols[1][row] = Int32GetDatum(nmsgs);
			cols[2][row] = result;
			cols[3][row] = Int32GetDatum((int32) msg->status);
			status_nulls[row] = msg->status == 0;
			cols[4][row] = error;
			error_nulls[row] = msg->reason == NULL;
			cols[5][row] = Int64GetDatum(delays[nmsgs]);
			cols[6][row] = Int32GetDatum(msg->max_attempts);
		}
		msgs[nmsgs++] = msg;
	}
	dims[0] = nrows;
	values[0] = PointerGetDatum(construct_array(cols[0], nrows, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(cols[1], nrows, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(cols[2], nrows, TEXTOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_md_array(cols[3], status_nulls, 1, dims, lbs,
												   INT4OID, 4, true, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_md_array(cols[4], error_nulls, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = PointerGetDatum(construct_array(cols[5], nrows, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[6] = PointerGetDatum(construct_array(cols[6], nrows, INT4OID, 4, true, TYPALIGN_INT));
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "recording deliveries failed");

	/* what became of each message's rows */
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int			m = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		char	   *status = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		if (strcmp(status, "delivered") == 0)
			rds[m].delivered++;
		else if (strcmp(status, "pending") == 0)
			rds[m].retried++;
		else
			rds[m].dead++;
	}

	for (int m = 0; m < nmsgs; m++)
	{
		RemoteMessage *msg = msgs[m];
		RouteState *state = route_state(msg->route_id);
		RouteDelivery *rd = &rds[m];
		double	   *latencies = palloc(msg->n * sizeof(double));

		rd->route_id = msg->route_id;
		rd->http_status = msg->status;
		rd->error = msg->reason;
		if (msg->result == REMOTE_DELIVERED)
		{
			for (int i = 0; i < msg->n; i++)
				latencies[i] = (msg->finished_at - msg->received[i]) / 1000.0;
			rd->latencies_ms = latencies;
			rd->nlatencies = msg->n;
		}
		stats_route_delivery(MyDatabaseId, rd, msg->finished_at);
		delivered_count += rd->delivered;
		/* the receiver is gone, or has failed for disable_after: disable */
		route_health_outcome(msg->route_id, msg->result == REMOTE_DELIVERED,
							 msg->gone, msg->summary);

		/*
		 * A slot is free: the route is due again if its last claim was full
		 * (pending is still true) or a retry comes due.
		 */
		state->inflight--;
		if (state->by_key)
			state->pending = true;
		if (rd->retried > 0)
		{
			TimestampTz due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delays[m]);

			state->retries = true;
			if (state->next_due == 0 || due < state->next_due)
				state->next_due = due;
		}
		pfree(latencies);
		pfree(msg->ids);
		pfree(msg->received);
		if (msg->reason)
			pfree(msg->reason);
		pfree(msg);
	}
}



/*
 * Hand the k rows of cl from "from" on, one message, to the route's sink.
 * The message lives in messages_cxt until its outcome is recorded.
 */
static void
start_message(Claimed *cl, int from, int k)
{
	RemoteMessage *msg = MemoryContextAllocZero(messages_cxt, sizeof(RemoteMessage));

	msg->route_id = cl->route->id;
	msg->max_attempts = cl->route->remote.max_attempts;
	msg->attempt = cl->attempts[from];
	msg->n = k;
	msg->ids = MemoryContextAlloc(messages_cxt, k * sizeof(int64));
	msg->received = MemoryContextAlloc(messages_cxt, k * sizeof(TimestampTz));
	memcpy(msg->ids, cl->ids + from, k * sizeof(int64));
	memcpy(msg->received, cl->received + from, k * sizeof(TimestampTz));
	msg->retry_after_ms = -1;
	remote_sink_of(cl->route)->start(cl->route, msg, cl->event_ids + from,
									 cl->payloads + from);
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
	bool		outcomes;
	bool		any;
	bool		durable = false;

	if (routes == NULL)
		return 0;
	delivery_init();

	/*
	 * One transaction for the outcomes of what finished and the claims of
	 * what may go now: a commit (a WAL flush, with outcomes) per loop, not
	 * per kind of bookkeeping.  The claims see the outcomes: a delivered
	 * event frees the next of its key.
	 */
	outcomes = any = !dlist_is_empty(&finished);
	now = GetCurrentTimestamp();
	for (int i = 0; i < routes->nroutes && !any; i++)
		any = remote_sink_of(&routes->routes[i]) != NULL &&
			route_due(&routes->routes[i], route_state(routes->routes[i].id), now);

	if (any)
	{
		pgstat_report_activity(STATE_RUNNING, "claiming deliveries");
		claimed = MemoryContextAllocZero(scratch_cxt, routes->nroutes * sizeof(Claimed));
		if (!bookkeeping_xact_begin(outcomes))
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			return now;			/* the extension is gone */
		}
		if (outcomes)
		{
			record_outcomes();
			now = GetCurrentTimestamp();
		}
		for (int i = 0; i < routes->nroutes; i++)
		{
			Route	   *route = &routes->routes[i];
			RouteState *state;

			if (remote_sink_of(route) == NULL ||
				!route_due(route, state = route_state(route->id), now))
				continue;
			if (state->next_due != 0 && state->next_due <= now)
				state->next_due = 0;
			claim(route, state, &claimed[nclaimed++], &durable, now);
		}
		if (durable && !outcomes)
			(void) set_config_option("synchronous_commit", "on", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);
		worker_xact_commit();
		pgstat_report_activity(STATE_IDLE, NULL);

		for (int c = 0; c < nclaimed; c++)
		{
			Claimed    *cl = &claimed[c];
			RouteState *state;

			for (int from = 0; from < cl->n;)
			{
				int			k = 1;

				while (from + k < cl->n && cl->batch[from + k] == cl->batch[from])
					k++;

				start_message(cl, from, k);
				state = route_state(cl->route->id);
				state->inflight++;
				state->tokens -= 1; /* (max_per_second) */
				from += k;
			}
		}
		MemoryContextReset(scratch_cxt);
		for (int i = 0; i < lengthof(sinks); i++)
			sinks[i]->progress();
	}

	/* when to come back: at once, or at the first retry or token */
	if (!dlist_is_empty(&finished))
		return now;
	for (int i = 0; i < routes->nroutes; i++)
	{
		Route	   *route = &routes->routes[i];
		RouteState *state;
		TimestampTz token;

		if (remote_sink_of(route) == NULL || route->remote.paused)
			continue;
		state = route_state(route->id);
		if (route_due(route, state, now))
			return now;
		if (state->next_due != 0 && (next == 0 || state->next_due < next))
			next = state->next_due;
		token = rate_due(route, state, now);
		if (token != 0 && (next == 0 || token < next))
			next = token;
	}
	return next;
}

/*
 * Sleep until the latch is set, a sink has something to do, or timeout_ms
 * passed; then let the sinks work.
 *
 * The wait set (latch, postmaster death, the sinks' sockets) is kept from
 * one wait to the next and only rebuilt when a sink's set of sockets
 * changed: under load the worker waits thousands of times a second, and
 * building an epoll set costs system calls per socket.  A socket whose
 * interest changed (reading, writing) is modified in place.
 */
static WaitEventSet *wait_set = NULL;
static int	wait_nsockets = 0;	/* sockets in wait_set */
static RemoteSocket *wait_sockets = NULL;	/* them, as added */
static int *wait_pos = NULL;	/* their positions in wait_set; -1: none */

/* the wait events of a socket; 0: none */
static uint32
socket_events(const RemoteSocket *sock)
{
	return (sock->readable ? WL_SOCKET_READABLE : 0) |
		(sock->writable ? WL_SOCKET_WRITEABLE : 0);
}

void
delivery_wait(long timeout_ms)
{
	const RemoteSocket *socks[lengthof(sinks)];
	int			nsocks[lengthof(sinks)];
	int			total = 0;
	bool		rebuild = (wait_set == NULL);
	TimestampTz deadline = 0;
	WaitEvent  *events;
	int			nevents;
	RemoteSocket *ready;
	int			nready;
	int			k;

	for (int s = 0; s < lengthof(sinks); s++)
	{
		TimestampTz d = 0;
		bool		changed = false;

		nsocks[s] = sinks[s]->sockets(&socks[s], &d, &changed);
		total += nsocks[s];
		rebuild |= changed;
		if (d != 0 && (deadline == 0 || d < deadline))
			deadline = d;
	}
	if (total == 0 && deadline == 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		return;
	}
	if (deadline != 0)
		timeout_ms = Min(timeout_ms,
						 TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline));

	/* a socket that starts or stops being waited on needs a new set too */
	rebuild |= total != wait_nsockets;
	k = 0;
	for (int s = 0; s < lengthof(sinks) && !rebuild; s++)
		for (int i = 0; i < nsocks[s] && !rebuild; i++, k++)
			rebuild = socks[s][i].fd != wait_sockets[k].fd ||
				(socket_events(&socks[s][i]) == 0) != (wait_pos[k] < 0);

	if (rebuild)
	{
		if (wait_set != NULL)
			FreeWaitEventSet(wait_set);
		if (wait_sockets != NULL)
		{
			pfree(wait_sockets);
			pfree(wait_pos);
		}
#if PG_VERSION_NUM >= 170000
		wait_set = CreateWaitEventSet(NULL, total + 2);
#else
		wait_set = CreateWaitEventSet(delivery_cxt, total + 2);
#endif
		wait_sockets = MemoryContextAlloc(delivery_cxt, Max(total, 1) * sizeof(RemoteSocket));
		wait_pos = MemoryContextAlloc(delivery_cxt, Max(total, 1) * sizeof(int));
		AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		k = 0;
		for (int s = 0; s < lengthof(sinks); s++)
			for (int i = 0; i < nsocks[s]; i++, k++)
			{
				uint32		ev = socket_events(&socks[s][i]);

				wait_sockets[k] = socks[s][i];
				wait_pos[k] = ev == 0 ? -1 :
					AddWaitEventToSet(wait_set, ev, socks[s][i].fd, NULL,
									  (void *) (intptr_t) s);
			}
		wait_nsockets = total;
	}
	else
	{
		k = 0;
		for (int s = 0; s < lengthof(sinks); s++)
			for (int i = 0; i < nsocks[s]; i++, k++)
			{
				uint32		ev = socket_events(&socks[s][i]);

				if (ev != socket_events(&wait_sockets[k]))
				{
					ModifyWaitEvent(wait_set, wait_pos[k], ev, NULL);
					wait_sockets[k] = socks[s][i];
				}
			}
	}

	events = palloc((total + 2) * sizeof(WaitEvent));
	ready = palloc(Max(total, 1) * sizeof(RemoteSocket));
	nevents = WaitEventSetWait(wait_set, Max(timeout_ms, 0), events, total + 2,
							   PG_WAIT_EXTENSION);
	for (int i = 0; i < nevents; i++)
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);

	/* each sink: its ready sockets (maybe none: it looks at its own timer) */
	for (int s = 0; s < lengthof(sinks); s++)
	{
		nready = 0;
		for (int i = 0; i < nevents; i++)
		{
			if (!(events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE)) ||
				(intptr_t) events[i].user_data != s)
				continue;
			ready[nready].fd = events[i].fd;
			ready[nready].readable = (events[i].events & WL_SOCKET_READABLE) != 0;
			ready[nready].writable = (events[i].events & WL_SOCKET_WRITEABLE) != 0;
			nready++;
		}
		sinks[s]->ready(ready, nready);
	}
	pfree(events);
	pfree(ready);
}
