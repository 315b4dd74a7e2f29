/*-------------------------------------------------------------------------
 *
 * channel.c
 *	  What a channel name may be: what NOTIFY accepts (not empty, shorter
 *	  than NAMEDATALEN bytes), and not the worker's control channel.  One
 *	  rule and one wording for the watch option, the route functions and
 *	  the worker.
 *
 * The control channel is reserved: a route on it would be removed with an
 * UNLISTEN of the worker's own channel, after which the worker would hear
 * of no route change until it restarts.  (A NOTIFY on it, which any role
 * can send, only makes the worker load the routes again: it never reads
 * the payload.)
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/channel.h"
#include "pg_notifier.h"

/* Would NOTIFY accept this channel name? */
bool
channel_name_valid(const char *channel)
{
	return channel[0] != '\0' && strlen(channel) < NAMEDATALEN;
}

/*
 * Error out unless NOTIFY would accept the channel name and it is not the
 * reserved control channel.  The name is not echoed: it may be of any
 * length.
 */
void
check_channel_name(const char *channel, const char *hint_if_empty)
{
	if (channel[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel name must not be empty"),
				 hint_if_empty ? errhint("%s", hint_if_empty) : 0));
	if (strlen(channel) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel name is too long"),
				 errdetail("It is %zu bytes; NOTIFY channel names are at most %d bytes.",
						   strlen(channel), NAMEDATALEN - 1),
				 errhint("Use a shorter channel name.")));
	if (strcmp(channel, NOTIFIER_CONTROL_CHANNEL) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("channel name \"%s\" is reserved", NOTIFIER_CONTROL_CHANNEL),
				 errdetail("The pg_notifier worker hears of route changes on this channel."),
				 errhint("Use another channel name.")));
}
