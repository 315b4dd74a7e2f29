/*-------------------------------------------------------------------------
 *
 * backfill.h
 *	  The worker running backfills, one batch per turn of its loop.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_BACKFILL_H
#define NOTIFIER_BACKFILL_H

#include "datatype/timestamp.h"

extern void backfill_wake(void);
extern TimestampTz backfill_next_at(void);
extern void backfill_step(void);

#endif							/* NOTIFIER_BACKFILL_H */
