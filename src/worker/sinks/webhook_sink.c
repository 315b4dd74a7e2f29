/*-------------------------------------------------------------------------
 *
 * webhook_sink.c
 *	  The webhook sink: the worker writes the events of a webhook route
 *	  into notifier.deliveries, in the transaction that drained them from
 *	  the NOTIFY queue; webhook_delivery.c sends them from there.
 *
 * Once an event is a row of notifier.deliveries it is delivered at least
 * once, whatever crashes or restarts come.  Each row keeps the event's id
 * (the "id" of pg_notifier's events; NULL for other payloads), which
 * becomes the webhook-id header, and for a route ordered by key the hash
 * of the event's schema, table and key (its order_key).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "worker/sinks/webhook_delivery.h"
#include "common/extension.h"
#include "common/payloads.h"
#include "worker/sinks/webhook_sink.h"

static SPIPlanPtr insert_plan = NULL;

/* the webhook-id of an event: its "id", NULL for other payloads */
static Datum
event_id(const char *payload, bool *isnull)
{
	char	   *id = payload_event_id(payload);

	*isnull = (id == NULL);
	return id ? CStringGetTextDatum(id) : (Datum) 0;
}

/*
 * Write payloads (JSON texts, in order) as deliveries of the route; the id
 * and the order key of each come from events[i], the event it was made
 * from (the same text unless the route has a transform).
 */
void
webhook_sink_write(Route *route, char **payloads, char **events_in,
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

	values[4] = BoolGetDatum(route->webhook.ordered == ROUTE_ORDER_KEY);
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
