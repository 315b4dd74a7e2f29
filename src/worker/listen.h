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
} Inbox;

extern void listen_channel(const char *channel);
extern void unlisten_channel(const char *channel);
extern void listen_collect(Inbox *inbox, Size limit);

#endif							/* NOTIFIER_LISTEN_H */
