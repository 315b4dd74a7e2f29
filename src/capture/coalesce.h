/*-------------------------------------------------------------------------
 *
 * coalesce.h
 *	  Per-transaction dedup: coalesced row events and statement-level
 *	  counts, emitted at commit.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_COALESCE_H
#define NOTIFIER_COALESCE_H

#include "capture/event.h"

extern void coalesce_change(const Watch *w, const ChangeEvent *ev);
extern void coalesce_in_order(const Watch *w, const ChangeEvent *ev);
extern void coalesce_count(const Watch *w, ChangeOp op, TimestampTz ts);

#endif							/* NOTIFIER_COALESCE_H */
