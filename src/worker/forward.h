/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  Forwarding received events to the sinks of their routes.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_FORWARD_H
#define NOTIFIER_FORWARD_H

#include "worker/listen.h"
#include "worker/routes.h"
#include "common/stats.h"

extern RouteDelta *forward_write(RouteTable *table, InboxItem *items,
								 int nitems, TimestampTz received_at,
								 MemoryContext keep_cxt);
extern void forward_events(RouteTable *table, InboxItem *items, int nitems,
						   TimestampTz received_at);

#endif							/* NOTIFIER_FORWARD_H */
