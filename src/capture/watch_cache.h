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
extern Oid	notify_change_oid(void);
extern List *notify_change_triggers(Relation rel, bool row_only);
extern const char *watch_trigger_channel(Trigger *tg, Relation rel);
extern Trigger *watch_trigger_of_channel(Relation rel, const char *channel);
extern Watch *watch_lookup_trigger(Relation rel, Trigger *tg);

#endif							/* NOTIFIER_WATCH_CACHE_H */
