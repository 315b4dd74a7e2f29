/*-------------------------------------------------------------------------
 *
 * watch_cache.h
 *	  The per-backend cache of resolved watches, one per trigger.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WATCH_CACHE_H
#define NOTIFIER_WATCH_CACHE_H

#include "commands/trigger.h"

#include "capture/event.h"

extern Watch *watch_lookup(TriggerData *trigdata);

#endif							/* NOTIFIER_WATCH_CACHE_H */
