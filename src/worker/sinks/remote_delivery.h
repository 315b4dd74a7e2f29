/*-------------------------------------------------------------------------
 *
 * remote_delivery.h
 *	  The delivery engine of the remote sinks: notifier.deliveries sent
 *	  from inside the worker's loop.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_REMOTE_DELIVERY_H
#define NOTIFIER_REMOTE_DELIVERY_H

#include "datatype/timestamp.h"
#include "worker/routes.h"

extern void remote_delivery_write(Route *route, char **payloads, char **events,
								  int npayloads, TimestampTz received_at);
extern void delivery_resume(void);
extern void delivery_route_has_pending(int64 route_id);
extern void delivery_all_pending(void);
extern TimestampTz delivery_work(RouteTable *routes);
extern void delivery_wait(long timeout_ms);
extern void delivery_stop(void);
extern uint64 delivery_delivered_count(void);

#endif							/* NOTIFIER_REMOTE_DELIVERY_H */
