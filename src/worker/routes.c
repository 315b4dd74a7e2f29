/*-------------------------------------------------------------------------
 *
 * routes.c
 *	  The worker's routes: the rows of notifier.routes, loaded into a
 *	  table by channel.
 *
 * Any change of notifier.routes NOTIFYs the control channel (a statement
 * trigger of the install script); the worker then loads the table again and
 * LISTENs/UNLISTENs as needed.  The SQL functions that manage routes are in
 * api/routes_api.c and api/webhook_api.c.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonpath.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/extension.h"
#include "common/sqlutil.h"
#include "worker/sinks/queue_sink.h"
#include "worker/routes.h"
#include "common/webhook_secret.h"

/* columns of notifier.routes read below by these names: route_shape.c's, the
 * engine's rate, the NATS sink's */
#define ROUTE_COL_FILTER 16
#define ROUTE_COL_TRANSFORM 17
#define ROUTE_COL_OWNER 18
#define ROUTE_COL_MAX_PER_SECOND 19
#define ROUTE_COL_NATS_SUBJECT 20	/* then nats_username, creds_file,
									 * tls_ca_file, tls_cert_file,
									 * tls_key_file */

static int
compare_strings(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/*
 * The channels that an 'auto' or 'outbox' watch feeds get their events from
 * the outbox, whatever comes over NOTIFY on them: the NOTIFY copy of an
 * 'auto' event is for LISTEN clients, and a NOTIFY anyone can send must not
 * reach a route as an event.  Only the other channels are listened to.
 */
/* notifier.routes.ordered (notifier.ordering, as text) */
static RouteOrdering
ordering(const char *value)
{
	if (value != NULL && strcmp(value, "key") == 0)
		return ROUTE_ORDER_KEY;
	if (value != NULL && strcmp(value, "route") == 0)
		return ROUTE_ORDER_ROUTE;
	return ROUTE_ORDER_NONE;
}

static void
mark_outbox_channels(RouteTable *table)
{
	MemoryContext old;
	ListCell   *lc;

	if (SPI_execute("SELECT DISTINCT w.channel FROM notifier.watches w"
					" WHERE w.valid AND w.delivery OPERATOR(pg_catalog.<>) 'notify'",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.watches failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *channel = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		ChannelRoutes *entry;

		if (channel == NULL || strlen(channel) >= NAMEDATALEN)
			continue;
		entry = hash_search(table->by_channel, channel, HASH_FIND, NULL);
		if (entry != NULL)
			entry->from_outbox = true;
	}
	old = MemoryContextSwitchTo(table->cxt);
	foreach(lc, table->channels)
	{
		if (routes_listened(table, lfirst(lc)))
			table->listened = lappend(table->listened, lfirst(lc));
	}
	MemoryContextSwitchTo(old);
}

/* A route's filter, transform and owner; in the table's context. */
static void
route_read_shape(Route *route, HeapTuple tuple, TupleDesc tupdesc)
{
	bool		isnull;
	Datum		filter = SPI_getbinval(tuple, tupdesc, ROUTE_COL_FILTER, &isnull);

	route->filter = isnull ? NULL : DatumGetJsonPathPCopy(filter);
	route->transform = SPI_getvalue(tuple, tupdesc, ROUTE_COL_TRANSFORM);
	route->owner = DatumGetObjectId(SPI_getbinval(tuple, tupdesc, ROUTE_COL_OWNER, &isnull));
	if (isnull)
		route->owner = InvalidOid;
}

/*
 * Read notifier.routes.  In a transaction with a snapshot, connected to SPI.
 */
RouteTable *
routes_load(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "pg_notifier routes",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	RouteTable *table;
	HASHCTL		ctl;
	uint64		n;

	if (SPI_execute("SELECT id, channel, kind, queue_table::pg_catalog.oid, url,"
					" ARRAY(SELECT h.key OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) h.value"
					"        FROM pg_catalog.jsonb_each_text(headers) h WHERE h.value IS NOT NULL ORDER BY h.key),"
					" secret, batch_size, max_attempts, timeout_ms, concurrency, ordered::pg_catalog.text,"
					" CASE WHEN previous_secret_until OPERATOR(pg_catalog.>) pg_catalog.now()"
					"   THEN previous_secret END, previous_secret_until,"
					" paused OR disabled_at IS NOT NULL,"
					" filter, transform, owner::pg_catalog.oid, max_per_second,"
					" subject, nats_username, creds_file, tls_ca_file, tls_cert_file, tls_key_file"
					" FROM notifier.routes ORDER BY id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading notifier.routes failed");
	n = SPI_processed;

	old = MemoryContextSwitchTo(cxt);
	table = palloc0(sizeof(RouteTable));
	table->cxt = cxt;
	table->routes = palloc0(Max(n, 1) * sizeof(Route));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(ChannelRoutes);
	ctl.hcxt = cxt;
	table->by_channel = hash_create("pg_notifier routes by channel",
									Max(n, 8), &ctl,
#if PG_VERSION_NUM >= 140000
									HASH_ELEM | HASH_STRINGS | HASH_CONTEXT
#else
									HASH_ELEM | HASH_CONTEXT
#endif
		);

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		Route	   *route = &table->routes[table->nroutes];
		char	   *kind = SPI_getvalue(tuple, tupdesc, 3);
		ChannelRoutes *entry;
		bool		isnull;
		bool		found;

		route->id = DatumGetInt64(SPI_getbinval(tuple, tupdesc, 1, &isnull));
		route->channel = SPI_getvalue(tuple, tupdesc, 2);
		route->cxt = cxt;
		route_read_shape(route, tuple, tupdesc);
		if (strcmp(kind, "queue") == 0)
		{
			route->kind = ROUTE_QUEUE;
			route->queue_table = DatumGetObjectId(SPI_getbinval(tuple, tupdesc, 4, &isnull));
		}
		else if (strcmp(kind, "webhook") == 0 || strcmp(kind, "nats") == 0)
		{
			char	   *secret = SPI_getvalue(tuple, tupdesc, 7);
			List	   *headers = text_array_to_list(DatumGetArrayTypeP(SPI_getbinval(tuple, tupdesc, 6, &isnull)), "headers");
			int			timeout_ms = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 10, &isnull));
			Datum		rate;

			route->remote.batch_size = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 8, &isnull));
			route->remote.max_attempts = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 9, &isnull));
			route->remote.concurrency = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 11, &isnull));
			route->remote.ordered = ordering(SPI_getvalue(tuple, tupdesc, 12));
			/* a disabled route (route_health.c) is kept like a paused one */
			route->remote.paused = DatumGetBool(SPI_getbinval(tuple, tupdesc, 15, &isnull));
			rate = SPI_getbinval(tuple, tupdesc, ROUTE_COL_MAX_PER_SECOND, &isnull);
			route->remote.max_per_second = isnull ? 0 : DatumGetFloat8(rate);
			if (strcmp(kind, "nats") == 0)
			{
				NatsConfig *nc = &route->nats;

				route->kind = ROUTE_NATS;
				nc->urls = SPI_getvalue(tuple, tupdesc, 5);
				nc->headers = headers;
				nc->timeout_ms = timeout_ms;
				nc->subject = SPI_getvalue(tuple, tupdesc, ROUTE_COL_NATS_SUBJECT);
				nc->username = SPI_getvalue(tuple, tupdesc, ROUTE_COL_NATS_SUBJECT + 1);
				/* the secret is the password of a username, else the token */
				if (nc->username != NULL)
					nc->password = secret;
				else
					nc->token = secret;
				nc->creds_file = SPI_getvalue(tuple, tupdesc, ROUTE_COL_NATS_SUBJECT + 2);
				nc->tls_ca_file = SPI_getvalue(tuple, tupdesc, ROUTE_COL_NATS_SUBJECT + 3);
				nc->tls_cert_file = SPI_getvalue(tuple, tupdesc, ROUTE_COL_NATS_SUBJECT + 4);
				nc->tls_key_file = SPI_getvalue(tuple, tupdesc, ROUTE_COL_NATS_SUBJECT + 5);
			}
			else
			{
				WebhookConfig *wh = &route->webhook;

				route->kind = ROUTE_WEBHOOK;
				wh->url = SPI_getvalue(tuple, tupdesc, 5);
				wh->headers = headers;
				wh->timeout_ms = timeout_ms;
				if (secret != NULL)
					wh->key = webhook_secret_key(secret, &wh->keylen);
				secret = SPI_getvalue(tuple, tupdesc, 13);
				if (secret != NULL)
				{
					wh->previous_key = webhook_secret_key(secret, &wh->previous_keylen);
					wh->previous_until = DatumGetTimestampTz(SPI_getbinval(tuple, tupdesc, 14, &isnull));
				}
			}
		}
		else
		{
			ereport(WARNING,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("route " INT64_FORMAT " of unknown kind \"%s\" skipped",
							route->id, kind)));
			continue;
		}
		if (strlen(route->channel) >= NAMEDATALEN)
			continue;			/* no NOTIFY can have such a channel */
		table->nroutes++;

		entry = hash_search(table->by_channel, route->channel, HASH_ENTER, &found);
		if (!found)
		{
			entry->from_outbox = false;
			entry->nroutes = 0;
			entry->routes = palloc(n * sizeof(Route *));
			table->channels = lappend(table->channels, entry->channel);
		}
		entry->routes[entry->nroutes++] = route;
	}
	list_sort(table->channels, compare_strings);
	MemoryContextSwitchTo(old);
	mark_outbox_channels(table);
	return table;
}

/* Connected to SPI or not: the sinks' plans are freed, not run. */
void
routes_free(RouteTable *table)
{
	if (table == NULL)
		return;
	for (int i = 0; i < table->nroutes; i++)
	{
		switch (table->routes[i].kind)
		{
			case ROUTE_QUEUE:
				queue_sink_free(&table->routes[i]);
				break;
			case ROUTE_WEBHOOK:
			case ROUTE_NATS:
				break;			/* its plan is shared and kept */
		}
	}
	MemoryContextDelete(table->cxt);
}

ChannelRoutes *
routes_for_channel(RouteTable *table, const char *channel)
{
	if (table == NULL || strlen(channel) >= NAMEDATALEN)
		return NULL;
	return hash_search(table->by_channel, channel, HASH_FIND, NULL);
}

/* Does the worker take this channel's events from NOTIFY? */
bool
routes_listened(RouteTable *table, const char *channel)
{
	ChannelRoutes *cr = routes_for_channel(table, channel);

	return cr != NULL && !cr->from_outbox;
}

/* A hash table in cxt of entries of entrysize whose key is a route id (int64). */
HTAB *
routes_hash_create(const char *name, Size entrysize, MemoryContext cxt)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = entrysize;
	ctl.hcxt = cxt;
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

Route *
routes_find(RouteTable *table, int64 route_id)
{
	for (int i = 0; table != NULL && i < table->nroutes; i++)
		if (table->routes[i].id == route_id)
			return &table->routes[i];
	return NULL;
}
