/*-------------------------------------------------------------------------
 *
 * routed_channels.h
 *	  Does a channel have a route?  Asked by delivery => 'auto'.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTED_CHANNELS_H
#define NOTIFIER_ROUTED_CHANNELS_H

extern bool channel_is_routed(const char *channel);

#endif							/* NOTIFIER_ROUTED_CHANNELS_H */
