/*-------------------------------------------------------------------------
 *
 * listen.h
 *	  LISTEN inside the server: the worker's NOTIFY inbox.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_LISTEN_H
#define NOTIFIER_LISTEN_H

#include "datatype/timestamp.h"

/* one notification, as a LISTEN client would receive it */
typedef struct InboxItem
{
	const char *channel;
	char	   *payload;
	int32		src_pid;		/* the notifying backend */
} InboxItem;

typedef struct Inbox
{
	MemoryContext cxt;			/* holds items and their strings */
	InboxItem  *items;
	int			nitems;
	int			maxitems;
	Size		bytes;			/* of channels and payloads held */
	int			done;			/* items [0, done) are forwarded */
	TimestampTz received_at;	/* when the first item was collected */
	struct BufFile *spill;		/* items past the limit, or NULL */
	int64		nspilled;		/* items in it not read back yet */
	bool		spill_reading;	/* reading it back has begun */
} Inbox;

extern void listen_channel(const char *channel);
extern void unlisten_channel(const char *channel);
extern void listen_collect(Inbox *inbox, Size limit);
extern bool listen_pending(const Inbox *inbox);
extern void listen_reset(Inbox *inbox);
extern bool listen_unspill(Inbox *inbox, Size limit);

#endif							/* NOTIFIER_LISTEN_H */
