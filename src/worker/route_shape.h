/*-------------------------------------------------------------------------
 *
 * route_shape.h
 *	  A route's filter and transform, applied by the worker.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTE_SHAPE_H
#define NOTIFIER_ROUTE_SHAPE_H

#include "worker/routes.h"

/*
 * A sink's write: payloads[0..n) as the route gets them, events[0..n) the
 * events they were made from (for their ids and keys).
 */
typedef void (*RouteWriteFn) (Route *route, char **payloads, char **events,
							  int n, TimestampTz received_at);

extern bool route_shapes(const Route *route);
extern int	route_shape_write(Route *route, char **events, int n,
							  TimestampTz received_at, RouteWriteFn write_fn);

#endif							/* NOTIFIER_ROUTE_SHAPE_H */
