/*-------------------------------------------------------------------------
 *
 * routes.h
 *	  Routes: which sink receives the events of which channel.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTES_H
#define NOTIFIER_ROUTES_H

#include "nodes/pg_list.h"
#include "utils/hsearch.h"

typedef enum RouteKind
{
	ROUTE_QUEUE
} RouteKind;

/* one row of notifier.routes, as the worker holds it */
typedef struct Route
{
	int64		id;
	const char *channel;
	RouteKind	kind;
	Oid			queue_table;	/* ROUTE_QUEUE */
	void	   *sink;			/* the sink's state, made on first write */
	MemoryContext cxt;			/* where the sink's state lives */
} Route;

/* the routes of one channel */
typedef struct ChannelRoutes
{
	char		channel[NAMEDATALEN];	/* hash key */
	int			nroutes;
	Route	  **routes;
} ChannelRoutes;

typedef struct RouteTable
{
	MemoryContext cxt;			/* everything below lives here */
	int			nroutes;
	Route	   *routes;			/* by id */
	List	   *channels;		/* distinct channel names (char *), sorted */
	HTAB	   *by_channel;		/* channel -> ChannelRoutes */
} RouteTable;

extern RouteTable *routes_load(MemoryContext parent);
extern void routes_free(RouteTable *table);
extern ChannelRoutes *routes_for_channel(RouteTable *table, const char *channel);

#endif							/* NOTIFIER_ROUTES_H */
