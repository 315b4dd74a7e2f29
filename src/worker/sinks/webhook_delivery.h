/*-------------------------------------------------------------------------
 *
 * webhook_delivery.h
 *	  Delivering notifier.deliveries to webhooks: libcurl multi inside the
 *	  worker's loop.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_DELIVERY_H
#define NOTIFIER_DELIVERY_H

#include "datatype/timestamp.h"
#include "worker/routes.h"

extern void delivery_resume(void);
extern void delivery_route_has_pending(int64 route_id);
extern void delivery_all_pending(void);
extern TimestampTz delivery_work(RouteTable *routes);
extern void delivery_stop(void);
extern uint64 delivery_delivered_count(void);

#endif							/* NOTIFIER_DELIVERY_H */
