/*-------------------------------------------------------------------------
 *
 * routes.h
 *	  Routes: which sink receives the events of which channel.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTES_H
#define NOTIFIER_ROUTES_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"
#include "utils/jsonpath.h"

typedef enum RouteKind
{
	ROUTE_QUEUE,
	ROUTE_WEBHOOK,
	ROUTE_NATS
} RouteKind;

/* notifier.routes.ordered */
typedef enum RouteOrdering
{
	ROUTE_ORDER_NONE,			/* up to concurrency requests, in any order */
	ROUTE_ORDER_KEY,			/* one request at a time per table and key */
	ROUTE_ORDER_ROUTE			/* one request at a time, in commit order */
} RouteOrdering;

/* what every remote route (webhook) says about its messages: the engine's */
typedef struct RemoteConfig
{
	int			batch_size;		/* events per message at most */
	int			max_attempts;
	int			concurrency;	/* messages in flight at most */
	RouteOrdering ordered;
	bool		paused;			/* pause_route(), or disabled: rows are kept,
								 * not sent */
	double		max_per_second; /* messages started per second at most; 0: no
								 * limit */
} RemoteConfig;

/* what a webhook route says about its requests */
typedef struct WebhookConfig
{
	const char *url;
	List	   *headers;		/* "Name: value" (char *) */
	char	   *key;			/* signing key (decoded secret), or NULL */
	int			keylen;
	char	   *previous_key;	/* the previous secret's, or NULL */
	int			previous_keylen;
	TimestampTz previous_until; /* sign with previous_key too until then */
	int			timeout_ms;
} WebhookConfig;

/* what a NATS route says about its connection and messages */
typedef struct NatsConfig
{
	const char *urls;			/* comma-separated nats:// or tls:// */
	const char *subject;		/* the template (common/nats_subject.h) */
	List	   *headers;		/* "Name: value" (char *) */
	const char *token;			/* or NULL */
	const char *username;		/* with password, or NULL */
	const char *password;
	const char *creds_file;		/* or NULL, and the TLS files */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	int			timeout_ms;		/* for a PubAck, and to connect */
} NatsConfig;

/* one row of notifier.routes, as the worker holds it */
typedef struct Route
{
	int64		id;
	const char *channel;
	RouteKind	kind;
	Oid			queue_table;	/* ROUTE_QUEUE */
	RemoteConfig remote;		/* a remote route (ROUTE_WEBHOOK, ROUTE_NATS) */
	WebhookConfig webhook;		/* ROUTE_WEBHOOK */
	JsonPath   *filter;			/* NULL: every event (route_shape.c) */
	const char *transform;		/* its signature; NULL: the event as it is */
	Oid			owner;			/* the role the transform runs as */
	NatsConfig	nats;			/* ROUTE_NATS */
	void	   *sink;			/* the sink's state, made on first write */
	MemoryContext cxt;			/* where the sink's state lives */
} Route;

/* the routes of one channel */
typedef struct ChannelRoutes
{
	char		channel[NAMEDATALEN];	/* hash key */
	bool		from_outbox;	/* an 'auto' or 'outbox' watch feeds it: its
								 * events come from the outbox only, never
								 * from NOTIFY */
	int			nroutes;
	Route	  **routes;
} ChannelRoutes;

typedef struct RouteTable
{
	MemoryContext cxt;			/* everything below lives here */
	int			nroutes;
	Route	   *routes;			/* by id */
	List	   *channels;		/* distinct channel names (char *), sorted */
	List	   *listened;		/* of those, not from_outbox: LISTENed to */
	HTAB	   *by_channel;		/* channel -> ChannelRoutes */
} RouteTable;

extern RouteTable *routes_load(MemoryContext parent);
extern void routes_free(RouteTable *table);
extern ChannelRoutes *routes_for_channel(RouteTable *table, const char *channel);
extern Route *routes_find(RouteTable *table, int64 route_id);
extern bool routes_listened(RouteTable *table, const char *channel);
extern HTAB *routes_hash_create(const char *name, Size entrysize, MemoryContext cxt);

#endif							/* NOTIFIER_ROUTES_H */
