/*-------------------------------------------------------------------------
 *
 * forward.c
 *	  Forwarding received events to the sinks of their routes: one
 *	  transaction per batch, one subtransaction per route.
 *
 * Before an event reaches a sink it is made whole: a reference to an
 * oversize event ({"ref":N,"truncated":true}) is replaced by the event
 * stored for the same channel, and a payload that is not JSON (a NOTIFY
 * sent by hand) becomes a JSON string, so that every sink can store it as
 * jsonb (this second step only when a sink refused the batch).
 *
 * A batch never fails as a unit.  Its events are written in chunks of at
 * most pg_notifier.max_batch_bytes (an event larger than that alone), and
 * each route's part of a chunk in one subtransaction.  When the sink refuses
 * it, the part is split in halves and each half written again, down to
 * single events: an event the sink cannot take (not valid jsonb, refused by
 * a trigger or a constraint of the queue table, too large) becomes a dead
 * letter of the route (notifier.dead_letters) with its reason, and every
 * other event is written, in order.  Finding k bad events among n costs
 * O(k log n) writes.
 *
 * A transient error (a lock or statement timeout, a serialization failure
 * or deadlock, a full disk, a read-only transaction) says nothing about the
 * events: the whole transaction is rolled back and tried again later
 * (forward_xact(), with backoff), so that nothing is lost and nothing is
 * written twice.  So is any error outside the sinks.
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
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "common/extension.h"
#include "common/payloads.h"
#include "worker/forward.h"
#include "worker/route_shape.h"
#include "pg_notifier.h"
#include "worker/sinks/queue_sink.h"
#include "common/stats.h"
#include "worker/sinks/remote_delivery.h"
#include "worker/worker_xact.h"

/* a route's failed writes are retried after this long, doubling up to the max */
#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 5000
/* the most of an error message a dead letter or a log line repeats */
#define REASON_MAX 1000

/* one chunk of a batch being forwarded */
typedef struct Chunk
{
	char	  **events;			/* as the sinks get them; NULL: no route */
	int			nevents;
	bool		checked;		/* events made JSON */
	TimestampTz received_at;
	MemoryContext keep_cxt;		/* for the errors kept */
	MemoryContext attempt_cxt;	/* one write_route(), reset after it */
	RouteDelta *deltas;
	ErrorData  *retry;			/* a transient error: roll back, retry */
} Chunk;

static SPIPlanPtr dead_letter_plan = NULL;

static bool
json_is_valid(char *text)
{
	bool		valid;

	/* jsonb refuses \u0000, which json accepts */
	if (strstr(text, "\\u0000") != NULL)
		return false;
#if PG_VERSION_NUM >= 170000
	{
		JsonLexContext lex;

		makeJsonLexContextCstringLen(&lex, text, strlen(text),
									 GetDatabaseEncoding(), false);
		valid = (pg_parse_json(&lex, &nullSemAction) == JSON_SUCCESS);
		freeJsonLexContext(&lex);
	}
#else
	{
		JsonLexContext *lex = makeJsonLexContextCstringLen(text, strlen(text),
														   GetDatabaseEncoding(),
														   false);

		valid = (pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS);
	}
#endif
	return valid;
}

/* at most REASON_MAX bytes of message, cut at a character boundary */
char *
clip(const char *message)
{
	int			len = strlen(message);

	if (len <= REASON_MAX)
		return pstrdup(message);
	return psprintf("%.*s...", pg_mbcliplen(message, len, REASON_MAX), message);
}

/*
 * The event itself, for a reference to an oversize event stored for the
 * same channel.
 */
static char *
resolve_reference(const InboxItem *item)
{
	int64		ref;
	char	   *event;

	if (!payload_reference(item->payload, &ref))
		return item->payload;
	event = payload_fetch(ref, item->channel);
	if (event != NULL)
		return event;
	ereport(WARNING,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("stored event " INT64_FORMAT " of channel \"%s\" does not exist",
					ref, item->channel),
			 errdetail("The reference is forwarded instead of the event."),
			 errhint("Raise pg_notifier.payload_retention.")));
	return item->payload;
}

/*
 * Turn every event that jsonb would refuse into a JSON string.  Returns
 * whether any was.
 */
static bool
make_json(char **events, int nevents)
{
	bool		changed = false;

	for (int i = 0; i < nevents; i++)
	{
		StringInfoData buf;

		if (events[i] == NULL || json_is_valid(events[i]))
			continue;
		initStringInfo(&buf);
		escape_json(&buf, events[i]);
		events[i] = buf.data;
		changed = true;
	}
	return changed;
}

/*
 * Errors that say nothing about the events: what failed may well work when
 * tried again (later).
 */
bool
error_is_transient(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_TRANSACTION_ROLLBACK:	/* serialization, deadlock */
		case ERRCODE_INSUFFICIENT_RESOURCES:	/* disk full, out of memory */
		case ERRCODE_SYSTEM_ERROR:	/* I/O */
			return true;
	}
	return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		sqlerrcode == ERRCODE_OBJECT_IN_USE ||
		sqlerrcode == ERRCODE_READ_ONLY_SQL_TRANSACTION ||
		sqlerrcode == ERRCODE_QUERY_CANCELED;
}

/* the sinks' write, for route_shape_write() */
static void
sink_write(Route *route, char **payloads, char **events, int n,
		   TimestampTz received_at)
{
	switch (route->kind)
	{
		case ROUTE_QUEUE:
			queue_sink_write(route, payloads, n, received_at);
			break;
		case ROUTE_WEBHOOK:
		case ROUTE_NATS:
			remote_delivery_write(route, payloads, events, n, received_at);
			break;
	}
}

/*
 * Write the events idx[0..n) of a chunk to a route in a subtransaction,
 * through its filter and transform.  Returns NULL, or the error (in
 * keep_cxt) when nothing was written; *filtered: how many events the filter
 * left out.
 */
static ErrorData *
write_route(Route *route, Chunk *chunk, const int *idx, int n, int *filtered)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;
	char	  **payloads;

	/*
	 * What the sink makes of the events (their text datums, the array) is
	 * freed after each attempt: bisecting must not keep a copy of the chunk
	 * per level.
	 */
	MemoryContextSwitchTo(chunk->attempt_cxt);
	payloads = palloc(n * sizeof(char *));
	for (int i = 0; i < n; i++)
		payloads[i] = chunk->events[idx[i]];

	*filtered = 0;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(chunk->attempt_cxt);
	PG_TRY();
	{
		if (route_shapes(route))
			*filtered = route_shape_write(route, payloads, n, chunk->received_at,
										  sink_write);
		else
			sink_write(route, payloads, payloads, n, chunk->received_at);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(chunk->keep_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*filtered = 0;
	}
	PG_END_TRY();
	MemoryContextReset(chunk->attempt_cxt);
	return edata;
}

/* An event the route cannot take: a row of notifier.dead_letters. */
static void
dead_letter(Route *route, const char *event, ErrorData *edata)
{
	static const Oid argtypes[] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	char	   *id = payload_event_id(event);
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	keep_plan(&dead_letter_plan,
			  "INSERT INTO notifier.dead_letters (route_id, event_id, event, reason)"
			  " VALUES ($1, $2, $3, $4)",
			  4, argtypes);
	values[0] = Int64GetDatum(route->id);
	values[1] = id ? CStringGetTextDatum(id) : (Datum) 0;
	nulls[1] = id ? ' ' : 'n';
	values[2] = CStringGetTextDatum(event);
	values[3] = CStringGetTextDatum(psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode),
											 clip(edata->message)));
	if (SPI_execute_plan(dead_letter_plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "writing a dead letter of route " INT64_FORMAT " failed", route->id);
}

/*
 * Write the events idx[0..n) of a chunk to a route: all at once, or, when
 * the sink refuses them, in halves down to the events it cannot take, which
 * become dead letters.  A transient error stops everything (chunk->retry).
 */
static void
write_events(Route *route, RouteDelta *delta, Chunk *chunk, const int *idx, int n)
{
	ErrorData  *edata;
	int			filtered;

	if (chunk->retry != NULL || n == 0)
		return;
	CHECK_FOR_INTERRUPTS();
	edata = write_route(route, chunk, idx, n, &filtered);

	/*
	 * Events are not checked to be JSON beforehand, which would cost as much
	 * as a third of storing them as jsonb: when a payload was refused, the
	 * payloads that are not JSON become JSON strings and the events are
	 * written again.
	 */
	if (edata != NULL && !chunk->checked &&
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_DATA_EXCEPTION)
	{
		chunk->checked = true;
		if (make_json(chunk->events, chunk->nevents))
			edata = write_route(route, chunk, idx, n, &filtered);
	}
	if (edata == NULL)
	{
		delta->written += n - filtered;
		delta->filtered += filtered;
		return;
	}

	/* out of memory with several events: fewer may fit */
	if (error_is_transient(edata->sqlerrcode) &&
		!(edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY && n > 1))
	{
		chunk->retry = edata;
		return;
	}
	if (n > 1)
	{
		write_events(route, delta, chunk, idx, n / 2);
		write_events(route, delta, chunk, idx + n / 2, n - n / 2);
		return;
	}

	dead_letter(route, chunk->events[idx[0]], edata);
	delta->dead++;
	delta->error = edata->message;
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("an event of channel \"%s\" is a dead letter of route " INT64_FORMAT,
					route->channel, route->id),
			 errdetail("%s", clip(edata->message)),
			 errhint("It is kept in notifier.dead_letters with the reason.")));
}

/* Write a chunk to the routes of its events' channels. */
static void
write_chunk(RouteTable *table, Chunk *chunk, InboxItem *items)
{
	int		  **batches = palloc0(table->nroutes * sizeof(int *));
	int		   *nbatch = palloc0(table->nroutes * sizeof(int));

	for (int i = 0; i < chunk->nevents; i++)
	{
		ChannelRoutes *cr;

		if (chunk->events[i] == NULL)
			continue;
		cr = routes_for_channel(table, items[i].channel);
		for (int r = 0; r < cr->nroutes; r++)
		{
			int			at = cr->routes[r] - table->routes;

			if (batches[at] == NULL)
				batches[at] = palloc((chunk->nevents - i) * sizeof(int));
			batches[at][nbatch[at]++] = i;
		}
	}

	for (int r = 0; r < table->nroutes && chunk->retry == NULL; r++)
	{
		chunk->deltas[r].received += nbatch[r];
		write_events(&table->routes[r], &chunk->deltas[r], chunk, batches[r], nbatch[r]);
	}
}

/*
 * Write items (in the order received) to the routes of their channels;
 * items of channels without a route are dropped.  In a worker transaction
 * (worker_xact.c).  Returns what happened per route (table->nroutes
 * entries, allocated in keep_cxt), for stats_routes_update() once the
 * transaction has committed.  *retry: NULL, or a transient error (in
 * keep_cxt): then the transaction must be rolled back and tried again.
 */
RouteDelta *
forward_write(RouteTable *table, InboxItem *items, int nitems,
			  TimestampTz received_at, MemoryContext keep_cxt, ErrorData **retry)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	MemoryContext attempt_cxt;
	RouteDelta *deltas;
	int			next = 0;

	deltas = MemoryContextAllocZero(keep_cxt, Max(table->nroutes, 1) * sizeof(RouteDelta));
	for (int r = 0; r < table->nroutes; r++)
		deltas[r].route_id = table->routes[r].id;
	*retry = NULL;
	if (nitems == 0 || table->nroutes == 0)
		return deltas;

	/* below SPI's procedure context: freed by SPI_finish() at the latest */
	chunk_cxt = AllocSetContextCreate(caller, "pg_notifier forward chunk",
									  ALLOCSET_DEFAULT_SIZES);
	attempt_cxt = AllocSetContextCreate(caller, "pg_notifier forward attempt",
										ALLOCSET_DEFAULT_SIZES);
	while (next < nitems && *retry == NULL)
	{
		Chunk		chunk;
		Size		bytes = 0;
		int			start = next;

		MemoryContextSwitchTo(chunk_cxt);
		memset(&chunk, 0, sizeof(chunk));
		chunk.events = palloc0((nitems - start) * sizeof(char *));
		chunk.received_at = received_at;
		chunk.keep_cxt = keep_cxt;
		chunk.attempt_cxt = attempt_cxt;
		chunk.deltas = deltas;

		/* events up to max_batch_bytes, or one larger event alone */
		for (; next < nitems; next++)
		{
			char	   *event;
			Size		len;

			if (routes_for_channel(table, items[next].channel) == NULL)
				continue;
			event = resolve_reference(&items[next]);
			len = strlen(event);
			if (bytes > 0 && bytes + len > (Size) notifier_max_batch_bytes)
				break;
			bytes += len;
			chunk.events[next - start] = event;
		}
		chunk.nevents = next - start;

		write_chunk(table, &chunk, items + start);
		*retry = chunk.retry;
		MemoryContextSwitchTo(caller);
		MemoryContextReset(chunk_cxt);
	}
	MemoryContextDelete(chunk_cxt);
	MemoryContextDelete(attempt_cxt);
	return deltas;
}

/* Is an attempt due, or is it still backing off? */
bool
backoff_waiting(const Backoff *backoff, TimestampTz now)
{
	return backoff->until != 0 && now < backoff->until;
}

/* A failed attempt: wait (with full jitter) before the next one, and say why. */
void
backoff_failed(Backoff *backoff, ErrorData *edata, const char *what)
{
	double		ceiling = BACKOFF_BASE_MS * pow(2.0, Min(backoff->failures, 16));
	long		ms;

	ceiling = Min(ceiling, (double) BACKOFF_MAX_MS);
	ms = BACKOFF_BASE_MS / 2 + (long) (pg_prng_double(&pg_global_prng_state) * ceiling);
	backoff->failures++;
	backoff->until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("%s failed, tried again in %ld ms", what, ms),
			 errdetail("%s", clip(edata->message)),
			 errhint("Nothing was written; the events are kept and written once this succeeds.")));
}

void
backoff_succeeded(Backoff *backoff)
{
	backoff->failures = 0;
	backoff->until = 0;
}

/*
 * Run fn(arg) in a worker transaction, and commit it, unless fn returns a
 * transient error in *retry or raises any error: then roll it back and back
 * off.  Returns whether it committed; then the route stats fn returned are
 * counted.  Outside a transaction.
 */
bool
forward_xact(ForwardXactFn fn, void *arg, RouteTable *table, Backoff *backoff,
			 const char *what)
{
	MemoryContext keep_cxt = CurrentMemoryContext;
	RouteDelta *volatile deltas = NULL;
	ErrorData  *volatile failed = NULL;

	PG_TRY();
	{
		ErrorData  *retry = NULL;

		if (!worker_xact_begin())
			worker_xact_commit();	/* the extension is gone, with its routes */
		else
		{
			deltas = fn(arg, keep_cxt, &retry);
			failed = retry;
			if (retry == NULL)
				worker_xact_commit();
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(keep_cxt);
		failed = CopyErrorData();
		FlushErrorState();
	}
	PG_END_TRY();

	if (failed != NULL)
	{
		worker_xact_abort();
		backoff_failed(backoff, failed, what);
		return false;
	}
	backoff_succeeded(backoff);
	if (deltas != NULL)
		stats_routes_update(MyDatabaseId, deltas, table->nroutes, GetCurrentTimestamp());
	return true;
}

typedef struct ForwardArgs
{
	RouteTable *table;
	InboxItem  *items;
	int			nitems;
	TimestampTz received_at;
} ForwardArgs;

static RouteDelta *
forward_fn(void *arg, MemoryContext keep_cxt, ErrorData **retry)
{
	ForwardArgs *a = arg;

	return forward_write(a->table, a->items, a->nitems, a->received_at, keep_cxt, retry);
}

/*
 * Forward items to the routes of their channels, in one transaction.
 * Called by the worker outside any transaction.  Returns false when it
 * must be tried again after backoff: nothing was written.
 */
bool
forward_events(RouteTable *table, InboxItem *items, int nitems,
			   TimestampTz received_at, Backoff *backoff)
{
	ForwardArgs args;

	if (table == NULL || table->nroutes == 0)
		return true;
	args.table = table;
	args.items = items;
	args.nitems = nitems;
	args.received_at = received_at;
	return forward_xact(forward_fn, &args, table, backoff, "forwarding notifications");
}
