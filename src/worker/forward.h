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

/* retrying a failed forwarding transaction, with backoff */
typedef struct Backoff
{
	int			failures;		/* in a row */
	TimestampTz until;			/* no attempt before; 0: none */
} Backoff;

/* the work of a forwarding transaction: see forward_xact() */
typedef RouteDelta *(*ForwardXactFn) (void *arg, MemoryContext keep_cxt,
									  ErrorData **retry);

extern RouteDelta *forward_write(RouteTable *table, InboxItem *items,
								 int nitems, TimestampTz received_at,
								 MemoryContext keep_cxt, ErrorData **retry);
extern bool forward_xact(ForwardXactFn fn, void *arg, RouteTable *table,
						 Backoff *backoff, const char *what);
extern bool forward_events(RouteTable *table, InboxItem *items, int nitems,
						   TimestampTz received_at, Backoff *backoff);
extern char *clip(const char *message);
extern bool error_is_transient(int sqlerrcode);
extern bool backoff_waiting(const Backoff *backoff, TimestampTz now);
extern void backoff_failed(Backoff *backoff, ErrorData *edata, const char *what);
extern void backoff_succeeded(Backoff *backoff);

#endif							/* NOTIFIER_FORWARD_H */
