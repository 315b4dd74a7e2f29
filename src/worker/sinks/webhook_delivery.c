/*-------------------------------------------------------------------------
 *
 * delivery.c
 *	  Delivering notifier.deliveries to webhooks, from inside the worker's
 *	  loop, with libcurl's multi interface.
 *
 * A delivery row goes pending -> in_flight (claimed, attempts + 1, in a
 * transaction committed before the request starts) -> delivered, pending
 * again (to retry at next_attempt_at) or dead.  When the worker starts,
 * rows left in_flight by a crash become pending again: delivery is at
 * least once, and a duplicate has the same webhook-id.
 *
 * Scheduling: each webhook route has at most `concurrency` requests in
 * flight (one if `ordered`), a new one claimed as soon as one finishes (no
 * batch barrier).  The worker knows when a route may have due rows: events
 * were written to it, a request of it finished, a retry time passed, rows
 * were redelivered; only then does it query.  A request carries one event,
 * or a JSON array of up to batch_size events.
 *
 * Waiting: the worker waits on its latch and on curl's sockets together (a
 * WaitEventSet rebuilt from curl's socket callbacks), with curl's timer as
 * the timeout, so NOTIFY draining, signals and route changes are served
 * while requests are in flight.
 *
 * Outcome: 2xx delivered; 408, 425, 429, 5xx, other non-4xx statuses,
 * timeouts and connection errors retried after a full-jitter exponential
 * backoff (Retry-After honoured on 429/503); other 4xx dead at once; dead
 * too after max_attempts attempts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>
#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/ilist.h"
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

#include "worker/sinks/webhook_delivery.h"
#include "common/extension.h"
#include "worker/worker_xact.h"
#include "pg_notifier.h"
#include "worker/sinks/webhook_sign.h"
#include "common/stats.h"

/* what the worker knows of a webhook route's rows */
typedef struct RouteState
{
	int64		route_id;		/* hash key */
	int			inflight;		/* requests in flight */
	bool		pending;		/* may have due pending rows */
	TimestampTz next_due;		/* a retry is due then; 0: none known */
	bool		retries;		/* may have rows waiting for a retry */
} RouteState;

/* one HTTP request: one or batch_size deliveries */
typedef struct Request
{
	dlist_node	node;
	CURL	   *easy;
	int64		route_id;
	int			max_attempts;
	int			attempt;		/* of the first delivery */
	int			n;
	int64	   *ids;
	TimestampTz *received;
	char	   *body;
	struct curl_slist *headers;
	long		retry_after_ms; /* from a Retry-After header; -1: none */
	char		errbuf[CURL_ERROR_SIZE];
	CURLcode	result;
	long		http_status;
	TimestampTz finished_at;
} Request;

typedef struct Socket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
} Socket;

static CURLM *multi = NULL;
static MemoryContext delivery_cxt = NULL;	/* requests, sockets, states */
static MemoryContext scratch_cxt = NULL;	/* one delivery_work() call */
static HTAB *states = NULL;
static dlist_head running = DLIST_STATIC_INIT(running);
static dlist_head finished = DLIST_STATIC_INIT(finished);
static Socket *sockets = NULL;
static int	nsockets = 0;
static int	maxsockets = 0;
static TimestampTz curl_deadline = 0;	/* curl's timer; 0: none */
static char *user_agent = NULL;
static uint64 delivered_count = 0;	/* rows delivered by this process */

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_ordered_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr outcome_plan = NULL;

/* rows claimed at most per query */
#define MAX_CLAIM 5000

static int
socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
			sockets[i] = sockets[--nsockets];
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == maxsockets)
		{
			maxsockets = Max(16, maxsockets * 2);
			sockets = sockets == NULL ?
				MemoryContextAlloc(delivery_cxt, maxsockets * sizeof(Socket)) :
				repalloc(sockets, maxsockets * sizeof(Socket));
		}
		nsockets++;
	}
	sockets[i].fd = fd;
	sockets[i].what = what;
	return 0;
}

static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	curl_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static void
create_states(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(RouteState);
	ctl.hcxt = delivery_cxt;
	states = hash_create("pg_notifier route states", 64, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static void
delivery_init(void)
{
	if (multi != NULL)
		return;
	delivery_cxt = AllocSetContextCreate(TopMemoryContext, "pg_notifier deliveries",
										 ALLOCSET_DEFAULT_SIZES);
	scratch_cxt = AllocSetContextCreate(delivery_cxt, "pg_notifier delivery scratch",
										ALLOCSET_DEFAULT_SIZES);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "curl_global_init failed");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "curl_multi_init failed");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_callback);
	user_agent = MemoryContextStrdup(delivery_cxt, "pg_notifier/" PG_NOTIFIER_VERSION);
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
static void
bookkeeping_xact_begin(bool durable)
{
	worker_xact_begin();
	if (!durable)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	worker_xact_plan_for_indexes();
}

/*
 * At start (or when the extension appears): requests that were in flight
 * when the worker stopped are sent again.
 */
void
delivery_resume(void)
{
	bookkeeping_xact_begin(true);
	if (SPI_execute("UPDATE notifier.deliveries"
					" SET status = 'pending', updated_at = pg_catalog.now()"
					" WHERE status = 'in_flight'", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "resuming deliveries failed");
	worker_xact_commit();
	delivery_all_pending();
}

static void
free_request(Request *req)
{
	if (req->easy != NULL)
	{
		curl_multi_remove_handle(multi, req->easy);
		curl_easy_cleanup(req->easy);
	}
	curl_slist_free_all(req->headers);
	pfree(req->ids);
	pfree(req->received);
	pfree(req->body);
	pfree(req);
}

/* The extension is gone: forget every request and route. */
void
delivery_stop(void)
{
	dlist_mutable_iter iter;

	if (multi == NULL)
		return;
	dlist_foreach_modify(iter, &running)
	{
		dlist_delete(iter.cur);
		free_request(dlist_container(Request, node, iter.cur));
	}
	dlist_foreach_modify(iter, &finished)
	{
		dlist_delete(iter.cur);
		free_request(dlist_container(Request, node, iter.cur));
	}
	hash_destroy(states);
	create_states();
}

/* curl: the response body is not kept */
static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

/* curl: Retry-After, in seconds or as an HTTP date */
static size_t
header_callback(char *buffer, size_t size, size_t nitems, void *userdata)
{
	Request    *req = userdata;
	size_t		len = size * nitems;
	static const char name[] = "retry-after:";

	if (len > sizeof(name) - 1 && pg_strncasecmp(buffer, name, sizeof(name) - 1) == 0)
	{
		char		value[64];
		size_t		vlen = Min(len - (sizeof(name) - 1), sizeof(value) - 1);
		char	   *end;
		long		secs;

		memcpy(value, buffer + sizeof(name) - 1, vlen);
		value[vlen] = '\0';
		secs = strtol(value, &end, 10);
		if (end != value && secs >= 0)
			req->retry_after_ms = secs * 1000;
		else
		{
			time_t		when = curl_getdate(value, NULL);

			if (when > 0)
				req->retry_after_ms = Max(0, (long) (when - time(NULL)) * 1000);
		}
	}
	return len;
}

static struct curl_slist *
append_header(struct curl_slist *list, const char *header)
{
	struct curl_slist *result = curl_slist_append(list, header);

	if (result == NULL)
	{
		curl_slist_free_all(list);
		elog(ERROR, "out of memory");
	}
	return result;
}

/*
 * Start a request for claimed rows [from, from + n) of a route.
 */
static void
start_request(Route *route, int64 *ids, char **event_ids, char **payloads,
			  int *attempts, TimestampTz *received, int n)
{
	WebhookConfig *wh = &route->webhook;
	MemoryContext old = MemoryContextSwitchTo(scratch_cxt);
	Request    *req = MemoryContextAllocZero(delivery_cxt, sizeof(Request));
	StringInfoData body;
	char	   *msg_id;
	int64		now_secs = (int64) time(NULL);
	ListCell   *lc;
	CURL	   *easy;

	req->route_id = route->id;
	req->max_attempts = wh->max_attempts;
	req->attempt = attempts[0];
	req->n = n;
	req->ids = MemoryContextAlloc(delivery_cxt, n * sizeof(int64));
	req->received = MemoryContextAlloc(delivery_cxt, n * sizeof(TimestampTz));
	memcpy(req->ids, ids, n * sizeof(int64));
	memcpy(req->received, received, n * sizeof(TimestampTz));
	req->retry_after_ms = -1;

	MemoryContextSwitchTo(delivery_cxt);
	initStringInfo(&body);
	if (wh->batch_size == 1)
		appendStringInfoString(&body, payloads[0]);
	else
	{
		appendStringInfoChar(&body, '[');
		for (int i = 0; i < n; i++)
		{
			if (i > 0)
				appendStringInfoChar(&body, ',');
			appendStringInfoString(&body, payloads[i]);
		}
		appendStringInfoChar(&body, ']');
	}
	req->body = body.data;
	MemoryContextSwitchTo(scratch_cxt);

	msg_id = event_ids[0] != NULL ? event_ids[0] : psprintf("delivery-" INT64_FORMAT, ids[0]);
	req->headers = append_header(NULL, "Content-Type: application/json");
	foreach(lc, wh->headers)
		req->headers = append_header(req->headers, lfirst(lc));
	req->headers = append_header(req->headers, psprintf("webhook-id: %s", msg_id));
	req->headers = append_header(req->headers,
								 psprintf("webhook-timestamp: " INT64_FORMAT, now_secs));
	if (wh->key != NULL)
		req->headers = append_header(req->headers,
									 psprintf("webhook-signature: %s",
											  webhook_signature(wh->key, wh->keylen, msg_id,
																now_secs, body.data, body.len)));
	/* no "Expect: 100-continue" round trip for large bodies */
	req->headers = append_header(req->headers, "Expect:");

	easy = curl_easy_init();
	if (easy == NULL)
	{
		free_request(req);
		elog(ERROR, "curl_easy_init failed");
	}
	req->easy = easy;
	curl_easy_setopt(easy, CURLOPT_URL, wh->url);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) body.len);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, user_agent);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) wh->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(wh->timeout_ms, 10000));
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_callback);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
	{
		free_request(req);
		elog(ERROR, "curl_multi_add_handle failed");
	}
	dlist_push_tail(&running, &req->node);
	route_state(route->id)->inflight++;
	MemoryContextSwitchTo(old);
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Claim what the route may send now and start the requests.  In a
 * transaction, connected to SPI; the requests start after the commit, so
 * they are collected in *claimed.
 */
typedef struct Claimed
{
	Route	   *route;
	int			n;
	int64	   *ids;
	char	  **event_ids;
	char	  **payloads;
	int		   *attempts;
	TimestampTz *received;
} Claimed;

/* requests the route may start now */
static int
free_slots(Route *route, RouteState *state)
{
	WebhookConfig *wh = &route->webhook;

	return wh->ordered ? (state->inflight == 0 ? 1 : 0) :
		wh->concurrency - state->inflight;
}

/* may the route have rows to send now? */
static bool
route_due(Route *route, RouteState *state, TimestampTz now)
{
	return free_slots(route, state) > 0 &&
		(state->pending || (state->next_due != 0 && state->next_due <= now));
}

static void
claim(Route *route, RouteState *state, Claimed *claimed)
{
	WebhookConfig *wh = &route->webhook;
	Oid			argtypes[2] = {INT8OID, INT4OID};
	int			want = Min(free_slots(route, state) * wh->batch_size, MAX_CLAIM);
	Datum		values[2];
	SPIPlanPtr	plan;
	uint64		n;
	int64	   *order;

	claimed->route = route;
	claimed->n = 0;
	if (want <= 0)
		return;

	values[0] = Int64GetDatum(route->id);
	values[1] = Int32GetDatum(want);
	if (wh->ordered)
		plan = keep_plan(&claim_ordered_plan,
						 "UPDATE notifier.deliveries d SET status = 'in_flight',"
						 "   attempts = d.attempts + 1, updated_at = pg_catalog.now()"
						 " WHERE d.id = ANY (ARRAY("
						 "   SELECT id FROM notifier.deliveries"
						 "    WHERE route_id = $1 AND status = 'pending' ORDER BY id LIMIT $2))"
						 "   AND (SELECT h.next_attempt_at <= pg_catalog.now()"
						 "          FROM notifier.deliveries h"
						 "         WHERE h.route_id = $1 AND h.status = 'pending'"
						 "         ORDER BY h.id LIMIT 1)"
						 " RETURNING d.id, d.event_id, d.payload::pg_catalog.text, d.attempts, d.received_at",
						 2, argtypes);
	else
		plan = keep_plan(&claim_plan,
						 "UPDATE notifier.deliveries d SET status = 'in_flight',"
						 "   attempts = d.attempts + 1, updated_at = pg_catalog.now()"
						 " WHERE d.id = ANY (ARRAY("
						 "   SELECT id FROM notifier.deliveries"
						 "    WHERE route_id = $1 AND status = 'pending'"
						 "      AND next_attempt_at <= pg_catalog.now()"
						 "    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED))"
						 " RETURNING d.id, d.event_id, d.payload::pg_catalog.text, d.attempts, d.received_at",
						 2, argtypes);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claiming deliveries failed");
	n = SPI_processed;

	/* in id order (RETURNING has none), kept past SPI_finish() */
	if (n > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(scratch_cxt);
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;

		order = palloc(n * 2 * sizeof(int64));
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;

			order[2 * i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], tupdesc, 1, &isnull));
			order[2 * i + 1] = (int64) i;
		}
		qsort(order, n, 2 * sizeof(int64), compare_int64);

		claimed->ids = palloc(n * sizeof(int64));
		claimed->event_ids = palloc(n * sizeof(char *));
		claimed->payloads = palloc(n * sizeof(char *));
		claimed->attempts = palloc(n * sizeof(int));
		claimed->received = palloc(n * sizeof(TimestampTz));
		for (uint64 k = 0; k < n; k++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[order[2 * k + 1]];
			bool		isnull;

			claimed->ids[k] = order[2 * k];
			claimed->event_ids[k] = SPI_getvalue(tuple, tupdesc, 2);
			claimed->payloads[k] = SPI_getvalue(tuple, tupdesc, 3);
			claimed->attempts[k] = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 4, &isnull));
			claimed->received[k] = DatumGetTimestampTz(SPI_getbinval(tuple, tupdesc, 5, &isnull));
		}
		claimed->n = n;
		pfree(order);
		MemoryContextSwitchTo(old);
	}

	/* as many as wanted: more may be due */
	if (n == (uint64) want)
		state->pending = true;

	/*
	 * Fewer than wanted: nothing else is due; when is the next retry?  (Only
	 * worth a query when some row may be waiting for one.)
	 */
	else if (!state->retries)
	{
		state->pending = false;
		state->next_due = 0;
	}
	else
	{
		bool		isnull;
		Datum		d;

		plan = keep_plan(&next_due_plan,
						 "SELECT min(next_attempt_at) FROM notifier.deliveries"
						 " WHERE route_id = $1 AND status = 'pending'",
						 1, argtypes);
		if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "reading deliveries failed");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		state->pending = false;
		state->next_due = isnull ? 0 : DatumGetTimestampTz(d);
		state->retries = !isnull;
	}
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
	dlist_mutable_iter iter;

	bookkeeping_xact_begin(true);
	plan = keep_plan(&outcome_plan,
					 "UPDATE notifier.deliveries SET"
					 " status = CASE WHEN $2 <> 'retry' THEN $2"
					 "               WHEN attempts >= $6 THEN 'dead' ELSE 'pending' END,"
					 " next_attempt_at = CASE WHEN $2 = 'retry'"
					 "   THEN pg_catalog.clock_timestamp() + $5 * interval '1 millisecond'"
					 "   ELSE next_attempt_at END,"
					 " last_http_status = $3, last_error = $4,"
					 " updated_at = pg_catalog.clock_timestamp(),"
					 " delivered_at = CASE WHEN $2 = 'delivered' THEN pg_catalog.clock_timestamp() END"
					 " WHERE id = ANY ($1) AND status = 'in_flight'"
					 " RETURNING status",
					 6, argtypes);

	dlist_foreach_modify(iter, &finished)
	{
		Request    *req = dlist_container(Request, node, iter.cur);
		RouteState *state = route_state(req->route_id);
		Outcome		outcome = classify(req);
		long		delay = outcome == OUTCOME_RETRY ? backoff_ms(req) : 0;
		char	   *error = NULL;
		Datum	   *idd = palloc(req->n * sizeof(Datum));
		Datum		values[6];
		char		nulls[6] = "      ";
		RouteDelivery rd;
		double	   *latencies = palloc(req->n * sizeof(double));

		if (req->result != CURLE_OK)
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

		/*
		 * A slot is free: the route is due again if its last claim was
		 * full (pending is still true) or a retry comes due.
		 */
		state->inflight--;
		if (rd.retried > 0)
		{
			TimestampTz due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

			state->retries = true;
			if (state->next_due == 0 || due < state->next_due)
				state->next_due = due;
		}
		dlist_delete(iter.cur);
		free_request(req);
	}

	worker_xact_commit();
}

/* Move what curl has finished to the finished list. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Request    *req;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &req->http_status);
		req->finished_at = GetCurrentTimestamp();
		curl_multi_remove_handle(multi, req->easy);
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
		dlist_delete(&req->node);
		dlist_push_tail(&finished, &req->node);
	}
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

	if (routes == NULL)
		return 0;
	delivery_init();
	if (!dlist_is_empty(&finished))
		record_outcomes();

	now = GetCurrentTimestamp();
	for (int i = 0; i < routes->nroutes && !any; i++)
		any = routes->routes[i].kind == ROUTE_WEBHOOK &&
			route_due(&routes->routes[i], route_state(routes->routes[i].id), now);

	if (any)
	{
		pgstat_report_activity(STATE_RUNNING, "claiming deliveries");
		claimed = MemoryContextAllocZero(scratch_cxt, routes->nroutes * sizeof(Claimed));
		bookkeeping_xact_begin(false);
		for (int i = 0; i < routes->nroutes; i++)
		{
			Route	   *route = &routes->routes[i];
			RouteState *state;

			if (route->kind != ROUTE_WEBHOOK ||
				!route_due(route, state = route_state(route->id), now))
				continue;
			if (state->next_due != 0 && state->next_due <= now)
				state->next_due = 0;
			claim(route, state, &claimed[nclaimed++]);
		}
		worker_xact_commit();
		pgstat_report_activity(STATE_IDLE, NULL);

		for (int c = 0; c < nclaimed; c++)
		{
			Claimed    *cl = &claimed[c];
			int			batch = cl->route->webhook.batch_size;

			for (int from = 0; from < cl->n; from += batch)
				start_request(cl->route, cl->ids + from, cl->event_ids + from,
							  cl->payloads + from, cl->attempts + from,
							  cl->received + from, Min(batch, cl->n - from));
		}
		MemoryContextReset(scratch_cxt);
		if (!dlist_is_empty(&running))
		{
			int			still_running;

			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
			collect_finished();
		}
	}

	/* when to come back: at once, or at the first retry */
	if (!dlist_is_empty(&finished))
		return now;
	for (int i = 0; i < routes->nroutes; i++)
	{
		Route	   *route = &routes->routes[i];
		RouteState *state;

		if (route->kind != ROUTE_WEBHOOK)
			continue;
		state = route_state(route->id);
		if (route_due(route, state, now))
			return now;
		if (state->next_due != 0 && (next == 0 || state->next_due < next))
			next = state->next_due;
	}
	return next;
}

/*
 * Sleep until the latch is set, curl has something to do, or timeout_ms
 * passed.
 */
void
delivery_wait(long timeout_ms)
{
	WaitEventSet *set;
	WaitEvent  *events;
	int			nevents;
	int			still_running;
	Socket	   *ready;
	int			nready = 0;

	if (multi == NULL || (nsockets == 0 && curl_deadline == 0))
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		return;
	}

	if (curl_deadline != 0)
	{
		long		curl_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
															  curl_deadline);

		timeout_ms = Min(timeout_ms, curl_ms);
	}

#if PG_VERSION_NUM >= 170000
	set = CreateWaitEventSet(NULL, nsockets + 2);
#else
	set = CreateWaitEventSet(CurrentMemoryContext, nsockets + 2);
#endif
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsockets; i++)
	{
		uint32		ev = 0;

		if (sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev != 0)
			AddWaitEventToSet(set, ev, sockets[i].fd, NULL, NULL);
	}
	events = palloc((nsockets + 2) * sizeof(WaitEvent));
	ready = palloc((nsockets + 2) * sizeof(Socket));
	nevents = WaitEventSetWait(set, Max(timeout_ms, 0), events, nsockets + 2,
							   PG_WAIT_EXTENSION);
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			ready[nready].fd = events[i].fd;
			ready[nready].what =
				((events[i].events & WL_SOCKET_READABLE) ? CURL_CSELECT_IN : 0) |
				((events[i].events & WL_SOCKET_WRITEABLE) ? CURL_CSELECT_OUT : 0);
			nready++;
		}
	}
	FreeWaitEventSet(set);

	for (int i = 0; i < nready; i++)
		curl_multi_socket_action(multi, ready[i].fd, ready[i].what, &still_running);
	if (curl_deadline != 0 && GetCurrentTimestamp() >= curl_deadline)
	{
		curl_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	}
	pfree(events);
	pfree(ready);
	collect_finished();
}
