/*-------------------------------------------------------------------------
 *
 * forward.c
 *	  Forwarding received events to the sinks of their routes: one
 *	  transaction per batch, one subtransaction per route.
 *
 * Before an event reaches a sink it is made whole: a reference to an
 * oversize event ({"ref":N,"truncated":true}) is replaced by the stored
 * event, and a payload that is not JSON (a NOTIFY sent by hand) becomes a
 * JSON string, so that every sink can store it as jsonb (this second step
 * only when a sink refused the batch).
 *
 * A route whose sink fails (its queue table was dropped, a trigger on it
 * raised an error...) loses that batch, which is counted and logged; the
 * other routes of the batch are written all the same.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker/forward.h"
#include "common/payloads.h"
#include "worker/sinks/queue_sink.h"
#include "common/stats.h"
#include "worker/sinks/webhook_sink.h"
#include "worker/worker_xact.h"

/* the events of one route in this batch: indexes into the batch's events */
typedef struct RouteBatch
{
	int		   *items;
	int			nitems;
} RouteBatch;

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

/* The event itself, for a reference to a stored oversize event. */
static char *
resolve_reference(char *payload)
{
	int64		ref;
	char	   *event;

	if (!payload_reference(payload, &ref))
		return payload;
	event = payload_fetch(ref);
	if (event != NULL)
		return event;
	ereport(WARNING,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("stored event " INT64_FORMAT " no longer exists", ref),
			 errdetail("The reference is forwarded instead of the event."),
			 errhint("Raise pg_notifier.payload_retention.")));
	return payload;
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
 * Write one route's batch in a subtransaction.  Returns NULL, or the error
 * (in keep_cxt) when nothing was written.
 */
static ErrorData *
write_route(Route *route, char **events, RouteBatch *batch,
			TimestampTz received_at, MemoryContext keep_cxt)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	  **payloads = palloc(batch->nitems * sizeof(char *));
	ErrorData  *edata = NULL;

	for (int i = 0; i < batch->nitems; i++)
		payloads[i] = events[batch->items[i]];

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		switch (route->kind)
		{
			case ROUTE_QUEUE:
				queue_sink_write(route, payloads, batch->nitems, received_at);
				break;
			case ROUTE_WEBHOOK:
				webhook_sink_write(route, payloads, batch->nitems, received_at);
				break;
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(keep_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	pfree(payloads);
	return edata;
}

/*
 * Write items (in the order received) to the routes of their channels;
 * items of channels without a route are dropped.  In a worker transaction
 * (worker_xact.c).  Returns what happened per route (table->nroutes
 * entries, allocated in keep_cxt), for stats_routes_update() once the
 * transaction has committed.
 */
RouteDelta *
forward_write(RouteTable *table, InboxItem *items, int nitems,
			  TimestampTz received_at, MemoryContext keep_cxt)
{
	char	  **events;			/* as the sinks get them; NULL: no route */
	RouteBatch *batches;
	RouteDelta *deltas;
	bool		checked = false;	/* events made JSON */

	deltas = MemoryContextAllocZero(keep_cxt, Max(table->nroutes, 1) * sizeof(RouteDelta));
	if (nitems == 0)
		return deltas;

	/* in SPI's procedure context: freed by SPI_finish() */
	events = palloc0(nitems * sizeof(char *));
	batches = palloc0(Max(table->nroutes, 1) * sizeof(RouteBatch));

	for (int i = 0; i < nitems; i++)
	{
		ChannelRoutes *cr = routes_for_channel(table, items[i].channel);

		if (cr == NULL)
			continue;
		events[i] = resolve_reference(items[i].payload);
		for (int r = 0; r < cr->nroutes; r++)
		{
			RouteBatch *batch = &batches[cr->routes[r] - table->routes];

			if (batch->items == NULL)
				batch->items = palloc((nitems - i) * sizeof(int));
			batch->items[batch->nitems++] = i;
		}
	}

	for (int r = 0; r < table->nroutes; r++)
	{
		Route	   *route = &table->routes[r];
		RouteBatch *batch = &batches[r];
		RouteDelta *delta = &deltas[r];
		ErrorData  *edata;

		delta->route_id = route->id;
		if (batch->nitems == 0)
			continue;
		delta->received = batch->nitems;
		edata = write_route(route, events, batch, received_at, keep_cxt);

		/*
		 * Events are not checked to be JSON beforehand, which would cost as
		 * much as a third of storing them as jsonb: when a payload was
		 * refused, the payloads that are not JSON become JSON strings and the
		 * batch is written again.
		 */
		if (edata != NULL && !checked &&
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_DATA_EXCEPTION)
		{
			checked = true;
			if (make_json(events, nitems))
				edata = write_route(route, events, batch, received_at, keep_cxt);
		}

		if (edata == NULL)
		{
			delta->written = batch->nitems;
			continue;
		}
		delta->errors = batch->nitems;
		delta->error = edata->message;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("%d events of channel \"%s\" could not be written to route " INT64_FORMAT,
						batch->nitems, route->channel, route->id),
				 errdetail("%s", edata->message),
				 edata->hint ? errhint("%s", edata->hint) : 0));
	}

	return deltas;
}

/*
 * Forward items to the routes of their channels, in one transaction.
 * Called by the worker outside any transaction.
 */
void
forward_events(RouteTable *table, InboxItem *items, int nitems,
			   TimestampTz received_at)
{
	MemoryContext keep_cxt = CurrentMemoryContext;
	RouteDelta *deltas;

	if (table == NULL || table->nroutes == 0)
		return;

	if (!worker_xact_begin())
	{
		worker_xact_commit();	/* the extension is gone: so are its routes */
		return;
	}
	deltas = forward_write(table, items, nitems, received_at, keep_cxt);
	worker_xact_commit();
	MemoryContextSwitchTo(keep_cxt);

	stats_routes_update(MyDatabaseId, deltas, table->nroutes, GetCurrentTimestamp());
}
