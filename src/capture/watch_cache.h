/*-------------------------------------------------------------------------
 *
 * watch_cache.h
 *	  The per-backend cache of resolved watches, one per trigger.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WATCH_CACHE_H
#define NOTIFIER_WATCH_CACHE_H

#include "commands/trigger.h"

#include "capture/event.h"

extern Watch *watch_lookup(TriggerData *trigdata);

#endif							/* NOTIFIER_WATCH_CACHE_H */
