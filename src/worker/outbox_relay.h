/*-------------------------------------------------------------------------
 *
 * outbox_relay.h
 *	  delivery => 'outbox': the worker moving events from notifier.outbox
 *	  to their routes.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_OUTBOX_RELAY_H
#define NOTIFIER_OUTBOX_RELAY_H

#include "worker/forward.h"
#include "worker/routes.h"

extern void outbox_relay(RouteTable *routes, Backoff *backoff);
extern void outbox_relay_reset(void);
extern void outbox_vacuum(void);

#endif							/* NOTIFIER_OUTBOX_RELAY_H */
