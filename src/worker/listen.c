/*-------------------------------------------------------------------------
 *
 * listen.c
 *	  LISTEN inside the server: how the worker receives notifications
 *	  without a client connection.
 *
 * The SQL LISTEN command is refused in a background process, but what it
 * does underneath, Async_Listen(), works in any backend connected to a
 * database: the registration takes effect when the transaction commits.
 * From then on a NOTIFY on the channel signals the worker (its latch is set
 * and notifyInterruptPending becomes true).
 *
 * A regular backend hands notifications to its client in
 * ProcessNotifyInterrupt(), as NotificationResponse ('A') protocol messages
 * written through PqCommMethods, and only when whereToSendOutput is
 * DestRemote.  listen_collect() runs it with a private PqCommMethods that
 * copies each 'A' message into an inbox instead of a socket; everything
 * else written through it is dropped.  The saved globals are restored
 * whatever happens.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "tcop/tcopprot.h"

#include "worker/listen.h"

/* the inbox being filled by listen_collect(), and its byte limit */
static Inbox *filling = NULL;
static Size filling_limit = 0;
static bool filling_full = false;

static void
inbox_comm_reset(void)
{
}

static int
inbox_flush(void)
{
	return 0;
}

static bool
inbox_is_send_pending(void)
{
	return false;
}

/*
 * An 'A' message is: int32 pid (network order), channel, payload (both
 * NUL-terminated).  It is copied into the inbox's context.
 */
static int
inbox_putmessage(char msgtype, const char *s, size_t len)
{
	Inbox	   *inbox = filling;
	uint32		pid;
	char	   *copy;
	size_t		channel_len;
	InboxItem  *item;

	if (msgtype != 'A' || inbox == NULL || len < sizeof(uint32) + 2)
		return 0;

	copy = MemoryContextAlloc(inbox->cxt, len - sizeof(uint32));
	/* what an item costs, not only its text: empty payloads add up too */
	inbox->bytes += len + sizeof(InboxItem) + 2 * sizeof(void *);
	memcpy(copy, s + sizeof(uint32), len - sizeof(uint32));
	channel_len = strnlen(copy, len - sizeof(uint32));
	if (channel_len + 1 >= len - sizeof(uint32))
		return 0;				/* malformed: cannot happen */
	memcpy(&pid, s, sizeof(uint32));

	if (inbox->nitems == inbox->maxitems)
	{
		int			newmax = Max(1024, inbox->maxitems * 2);

		if (inbox->items == NULL)
			inbox->items = MemoryContextAlloc(inbox->cxt, newmax * sizeof(InboxItem));
		else
			inbox->items = repalloc_huge(inbox->items, newmax * sizeof(InboxItem));
		inbox->maxitems = newmax;
	}
	item = &inbox->items[inbox->nitems++];
	item->channel = copy;
	item->payload = copy + channel_len + 1;
	item->src_pid = (int32) pg_ntoh32(pid);

	/*
	 * Full: stop reading the NOTIFY queue.  The only way out of
	 * asyncQueueReadAllNotifications() is an error, which it is made to
	 * survive: it has already moved past this notification, and it saves its
	 * position on the way out.  listen_collect() catches the error.
	 */
	if (inbox->bytes >= filling_limit)
	{
		filling_full = true;
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("pg_notifier inbox is full")));
	}
	return 0;
}

static void
inbox_putmessage_noblock(char msgtype, const char *s, size_t len)
{
	(void) inbox_putmessage(msgtype, s, len);
}

#if PG_VERSION_NUM < 140000
static void
inbox_startcopyout(void)
{
}

static void
inbox_endcopyout(bool errorAbort)
{
}
#endif

static const PQcommMethods inbox_methods = {
	.comm_reset = inbox_comm_reset,
	.flush = inbox_flush,
	.flush_if_writable = inbox_flush,
	.is_send_pending = inbox_is_send_pending,
	.putmessage = inbox_putmessage,
	.putmessage_noblock = inbox_putmessage_noblock,
#if PG_VERSION_NUM < 140000
	.startcopyout = inbox_startcopyout,
	.endcopyout = inbox_endcopyout,
#endif
};

/*
 * LISTEN / UNLISTEN: inside a transaction; effective when it commits.
 */
void
listen_channel(const char *channel)
{
	Async_Listen(channel);
}

void
unlisten_channel(const char *channel)
{
	Async_Unlisten(channel);
}

/*
 * Append the notifications that arrived since the last call to the inbox,
 * until it holds limit bytes (one notification more at most: < 8 kB); the
 * rest wait in the NOTIFY queue, and notifyInterruptPending stays true.
 * Outside any transaction (ProcessNotifyInterrupt() runs its own).
 */
void
listen_collect(Inbox *inbox, Size limit)
{
	const PQcommMethods *save_methods = PqCommMethods;
	CommandDest save_dest = whereToSendOutput;
	MemoryContext cxt = CurrentMemoryContext;

	Assert(!IsTransactionOrTransactionBlock());
	Assert(filling == NULL);

	if (inbox->bytes >= limit)
		return;
	filling = inbox;
	filling_limit = limit;
	filling_full = false;
	PqCommMethods = &inbox_methods;
	whereToSendOutput = DestRemote;
	PG_TRY();
	{
		ProcessNotifyInterrupt(false);
	}
	PG_CATCH();
	{
		PqCommMethods = save_methods;
		whereToSendOutput = save_dest;
		filling = NULL;
		if (!filling_full)
			PG_RE_THROW();
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(cxt);
		notifyInterruptPending = true;
	}
	PG_END_TRY();
	PqCommMethods = save_methods;
	whereToSendOutput = save_dest;
	filling = NULL;
}
