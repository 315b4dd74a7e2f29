/*-------------------------------------------------------------------------
 *
 * channel.h
 *	  What a channel name may be.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_CHANNEL_H
#define NOTIFIER_CHANNEL_H

extern bool channel_name_valid(const char *channel);
extern void check_channel_name(const char *channel, const char *hint_if_empty);

#endif							/* NOTIFIER_CHANNEL_H */
