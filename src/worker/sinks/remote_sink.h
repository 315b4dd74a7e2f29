/*-------------------------------------------------------------------------
 *
 * remote_sink.h
 *	  What a remote sink (webhook; NATS JetStream next) gives the delivery
 *	  engine, remote_delivery.c.
 *
 * The engine owns everything that is the same for every remote receiver:
 * the rows of notifier.deliveries, claims, batches (a batch is one message,
 * fixed at its first attempt), ordering, concurrency, rate, retries with
 * backoff, dead letters, stats.  A sink only moves messages: it starts one,
 * makes progress on what it has in flight when the worker wakes up, and
 * says how each message ended, in the engine's words (RemoteResult), never
 * in its protocol's.  So a new sink adds connect / send / interpret-result
 * and nothing else.
 *
 * A sink is driven from the worker's loop, in the worker's own thread.  It
 * may have many messages in flight; it says which sockets it waits on and
 * until when (the engine waits on them together with the worker's latch),
 * and is told which became ready.  A sink whose client library does its
 * I/O on its own threads (libnats) has no sockets to give: it sets the
 * latch from its callback and hands the outcome over in progress().
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_REMOTE_SINK_H
#define NOTIFIER_REMOTE_SINK_H

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "worker/routes.h"

/* how a message ended, in the engine's words */
typedef enum RemoteResult
{
	REMOTE_DELIVERED,			/* the receiver has it */
	REMOTE_RETRY,				/* try again later (retry_after_ms, or
								 * backoff) */
	REMOTE_DEAD					/* retrying cannot help: a dead letter now */
} RemoteResult;

/*
 * One message: one event, or a batch of them.  Made by the engine, handed
 * to the sink's start(), handed back by the sink through
 * remote_delivery_finished() with the outcome filled in.  The sink never
 * frees it; the engine never touches it between the two.
 */
typedef struct RemoteMessage
{
	/* set by the engine */
	dlist_node	node;			/* the engine's list of finished messages */
	int64		route_id;
	int			max_attempts;	/* of the route when it started */
	int			attempt;		/* the attempt this is, of its first event */
	int			n;				/* events */
	int64	   *ids;			/* their rows of notifier.deliveries */
	TimestampTz *received;		/* when each reached the worker */

	/* set by the sink when it is finished */
	RemoteResult result;
	long		retry_after_ms; /* REMOTE_RETRY: the receiver asked for this
								 * wait; -1: the engine's backoff */
	int			status;			/* the receiver's status code (HTTP), shown as
								 * last_http_status; 0: no answer */
	char	   *reason;			/* why not delivered, allocated in the
								 * message's memory context; NULL when
								 * delivered */
	const char *summary;		/* not delivered: a short, bounded text of
								 * why, with no URL nor anything the receiver
								 * sent, for what every role may read
								 * (route_health.c) */
	bool		gone;			/* the receiver says it is gone for good (HTTP
								 * 410): the route is disabled */
	TimestampTz finished_at;
} RemoteMessage;

/* a socket a sink waits on */
typedef struct RemoteSocket
{
	pgsocket	fd;
	bool		readable;
	bool		writable;
} RemoteSocket;

typedef struct RemoteSink
{
	/*
	 * How many of the n events (in order) one message may carry, at least
	 * one; and the most bytes of events a message holds, for the size of a
	 * claim.
	 */
	int			(*message_events) (char **payloads, int n);
	Size		(*max_message_bytes) (void);

	/*
	 * Start sending msg: the events' ids (the idempotency key of the message
	 * is event_ids[0], NULL when the event has none) and payloads.
	 * Temporaries in the caller's memory context; what the request keeps, in
	 * the sink's own.
	 */
	void		(*start) (Route *route, RemoteMessage *msg, char **event_ids,
						  char **payloads);

	/* let the sink work on what it has: after starts, and after a wait */
	void		(*progress) (void);

	/*
	 * The sockets to wait on (*sockets, valid until the next call into the
	 * sink) and the time the sink must be called again at the latest
	 * (*deadline, 0: none).  *changed: the set of sockets is not the one of
	 * the previous call.  Returns the number of sockets.
	 */
	int			(*sockets) (const RemoteSocket **sockets, TimestampTz *deadline,
							bool *changed);

	/* these sockets are ready (readable / writable as flagged) */
	void		(*ready) (const RemoteSocket *ready, int nready);

	/* the extension is gone: forget every message, send nothing more */
	void		(*cancel_all) (void);
} RemoteSink;

/* the sink of a route, NULL for a route that is not remote */
extern const RemoteSink *remote_sink_of(const Route *route);

/* a sink calls this for each message it has finished, from progress() or ready() */
extern void remote_delivery_finished(RemoteMessage *msg);

/* the sinks */
extern const RemoteSink webhook_sink;
extern const RemoteSink nats_sink;

#endif							/* NOTIFIER_REMOTE_SINK_H */
