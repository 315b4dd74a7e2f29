/*-------------------------------------------------------------------------
 *
 * forward.c
 *	  Forwarding received events to the sinks of their routes: one
 *	  transaction per batch, one subtransaction per route.
 *
 * Before an event reaches a sink it is made whole: a reference to an
 * oversize event ({"ref":N,"truncated":true}) is replaced by the stored
 * event, and a payload that is not JSON (a NOTIFY sent by hand) becomes a
 * JSON string, so that every sink can store it as jsonb.
 *
 * A route whose sink fails (its queue table was dropped, a trigger on it
 * raised an error...) loses that batch, which is counted and logged; the
 * other routes of the batch are written all the same.
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

#include "forward.h"
#include "payloads.h"
#include "queue_sink.h"
#include "stats.h"

/* the events of one route in this batch */
typedef struct RouteBatch
{
	char	  **payloads;
	int			npayloads;
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

/* The event as a sink stores it; see the file header. */
static char *
sinkable_event(char *payload)
{
	int64		ref;
	StringInfoData buf;

	if (payload_reference(payload, &ref))
	{
		char	   *event = payload_fetch(ref);

		if (event != NULL)
			return event;
		ereport(WARNING,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("pg_notifier: stored event " INT64_FORMAT " no longer exists; forwarding the reference",
						ref),
				 errhint("Raise pg_notifier.payload_retention.")));
		return payload;
	}
	if (json_is_valid(payload))
		return payload;

	initStringInfo(&buf);
	escape_json(&buf, payload);
	return buf.data;
}

/*
 * Write one route's batch in a subtransaction.  Returns NULL, or the error
 * message (in keep_cxt) when the batch was lost.
 */
static char *
write_route(Route *route, RouteBatch *batch, TimestampTz received_at,
			MemoryContext keep_cxt)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		switch (route->kind)
		{
			case ROUTE_QUEUE:
				queue_sink_write(route, batch->payloads, batch->npayloads,
								 received_at);
				break;
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(keep_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;

		error = edata->message;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("pg_notifier: %d events of channel \"%s\" could not be written to route " INT64_FORMAT ": %s",
						batch->npayloads, route->channel, route->id, edata->message),
				 edata->hint ? errhint("%s", edata->hint) : 0));
	}
	PG_END_TRY();
	return error;
}

/*
 * Forward items (in the order received) to the routes of their channels, in
 * one transaction.  Called by the worker outside any transaction; items of
 * channels without a route are dropped.
 */
void
forward_events(RouteTable *table, InboxItem *items, int nitems,
			   TimestampTz received_at)
{
	MemoryContext keep_cxt = CurrentMemoryContext;
	RouteBatch *batches;
	RouteDelta *deltas;

	if (table == NULL || table->nroutes == 0)
		return;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* in SPI's procedure context: freed by SPI_finish() */
	batches = palloc0(table->nroutes * sizeof(RouteBatch));
	deltas = MemoryContextAllocZero(keep_cxt, table->nroutes * sizeof(RouteDelta));

	for (int i = 0; i < nitems; i++)
	{
		ChannelRoutes *cr = routes_for_channel(table, items[i].channel);
		char	   *event;

		if (cr == NULL)
			continue;
		event = sinkable_event(items[i].payload);
		for (int r = 0; r < cr->nroutes; r++)
		{
			RouteBatch *batch = &batches[cr->routes[r] - table->routes];

			if (batch->payloads == NULL)
				batch->payloads = palloc((nitems - i) * sizeof(char *));
			batch->payloads[batch->npayloads++] = event;
		}
	}

	for (int r = 0; r < table->nroutes; r++)
	{
		RouteBatch *batch = &batches[r];
		RouteDelta *delta = &deltas[r];

		delta->route_id = table->routes[r].id;
		if (batch->npayloads == 0)
			continue;
		delta->received = batch->npayloads;
		delta->error = write_route(&table->routes[r], batch, received_at, keep_cxt);
		if (delta->error == NULL)
			delta->written = batch->npayloads;
		else
			delta->errors = batch->npayloads;
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(keep_cxt);

	stats_routes_update(MyDatabaseId, deltas, table->nroutes, GetCurrentTimestamp());
}
