/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  Forwarding received events to the sinks of their routes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_FORWARD_H
#define NOTIFIER_FORWARD_H

#include "listen.h"
#include "routes.h"

extern void forward_events(RouteTable *table, InboxItem *items, int nitems,
						   TimestampTz received_at);

#endif							/* NOTIFIER_FORWARD_H */
