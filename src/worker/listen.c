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
 * ProcessNotifyInterrupt() reads everything the NOTIFY queue holds (up to
 * its 8 GB), and cannot be stopped halfway: an error there is a FATAL one.
 * So an inbox holds at most a given number of bytes in memory, and writes
 * what comes past that to a temporary file (its spill), from which
 * listen_unspill() reads it back, in order, once the items in memory have
 * been forwarded.  An inbox's spill is only written before it is first read.
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
#include "storage/buffile.h"
#include "utils/memutils.h"
#include "port/pg_bswap.h"
#include "tcop/tcopprot.h"

#include "worker/listen.h"

/* the inbox being filled by listen_collect(), and its byte limit */
static Inbox *filling = NULL;
static Size filling_limit = 0;

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
 * Add an 'A' message (int32 pid in network order, channel, payload, both
 * NUL-terminated) to the inbox's items, copied into its context.
 */
static void
inbox_add(Inbox *inbox, const char *s, size_t len)
{
	uint32		pid;
	char	   *copy;
	size_t		channel_len;
	InboxItem  *item;

	copy = MemoryContextAlloc(inbox->cxt, len - sizeof(uint32));
	/* what an item costs, not only its text: empty payloads add up too */
	inbox->bytes += len + sizeof(InboxItem) + 2 * sizeof(void *);
	memcpy(copy, s + sizeof(uint32), len - sizeof(uint32));
	channel_len = strnlen(copy, len - sizeof(uint32));
	if (channel_len + 1 >= len - sizeof(uint32))
		return;					/* malformed: cannot happen */
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
}

/* past the inbox's limit: the message goes to its spill file */
static void
inbox_spill(Inbox *inbox, const char *s, size_t len)
{
	uint32		len32 = (uint32) len;

	Assert(!inbox->spill_reading);
	if (inbox->spill == NULL)
	{
		/* outlives ProcessIncomingNotify()'s transaction and its memory */
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		inbox->spill = BufFileCreateTemp(true);
		MemoryContextSwitchTo(old);
	}
	BufFileWrite(inbox->spill, &len32, sizeof(len32));
	BufFileWrite(inbox->spill, (void *) s, len);
	inbox->nspilled++;
}

static int
inbox_putmessage(char msgtype, const char *s, size_t len)
{
	Inbox	   *inbox = filling;

	if (msgtype != 'A' || inbox == NULL || len < sizeof(uint32) + 2)
		return 0;
	if (inbox->bytes < filling_limit && inbox->nspilled == 0)
		inbox_add(inbox, s, len);
	else
		inbox_spill(inbox, s, len);
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
 * Append the notifications that arrived since the last call to the inbox:
 * into memory up to limit bytes (one notification more at most: < 8 kB),
 * the rest to its spill.  Outside any transaction (ProcessNotifyInterrupt()
 * runs its own).
 */
void
listen_collect(Inbox *inbox, Size limit)
{
	const PQcommMethods *save_methods = PqCommMethods;
	CommandDest save_dest = whereToSendOutput;

	Assert(!IsTransactionOrTransactionBlock());
	Assert(filling == NULL);

	filling = inbox;
	filling_limit = limit;
	PqCommMethods = &inbox_methods;
	whereToSendOutput = DestRemote;
	PG_TRY();
	{
		ProcessNotifyInterrupt(false);
	}
	PG_FINALLY();
	{
		PqCommMethods = save_methods;
		whereToSendOutput = save_dest;
		filling = NULL;
	}
	PG_END_TRY();
}

/* Has the inbox items not forwarded yet, in memory or in its spill? */
bool
listen_pending(const Inbox *inbox)
{
	return inbox->done < inbox->nitems || inbox->nspilled > 0;
}

/* Forget the items in memory. */
void
listen_reset(Inbox *inbox)
{
	MemoryContextReset(inbox->cxt);
	inbox->items = NULL;
	inbox->nitems = inbox->maxitems = inbox->done = 0;
	inbox->bytes = 0;
}

/*
 * Once the items in memory are forwarded: replace them by the next ones of
 * the spill, up to limit bytes.  Returns false when the spill is empty.
 */
bool
listen_unspill(Inbox *inbox, Size limit)
{
	char	   *buf = NULL;
	size_t		bufsize = 0;

	Assert(inbox->done == inbox->nitems);
	if (inbox->nspilled == 0)
		return false;
	listen_reset(inbox);
	if (!inbox->spill_reading)
	{
		if (BufFileSeek(inbox->spill, 0, 0, SEEK_SET) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not rewind the temporary file of pg_notifier's inbox: %m")));
		inbox->spill_reading = true;
	}
	while (inbox->nspilled > 0 && inbox->bytes < limit)
	{
		uint32		len;

		if (BufFileRead(inbox->spill, &len, sizeof(len)) != sizeof(len))
			elog(ERROR, "could not read the temporary file of pg_notifier's inbox");
		if (len > bufsize)
		{
			bufsize = Max(len, 8192);
			buf = buf ? repalloc(buf, bufsize) : palloc(bufsize);
		}
		if (BufFileRead(inbox->spill, buf, len) != len)
			elog(ERROR, "could not read the temporary file of pg_notifier's inbox");
		inbox_add(inbox, buf, len);
		inbox->nspilled--;
	}
	if (buf != NULL)
		pfree(buf);
	if (inbox->nspilled == 0)
	{
		BufFileClose(inbox->spill);
		inbox->spill = NULL;
		inbox->spill_reading = false;
	}
	return true;
}
