/*-------------------------------------------------------------------------
 *
 * outbox_writer.h
 *	  delivery => 'outbox': writing events into notifier.outbox.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_OUTBOX_H
#define NOTIFIER_OUTBOX_H

#include "datatype/timestamp.h"

#include "capture/event.h"

extern void outbox_lock(void);
extern void outbox_batch_begin(void);
extern void outbox_batch_end(void);
extern void outbox_write(const Watch *w, const char *event,
						 const char *notify_payload, TimestampTz ts);

#endif							/* NOTIFIER_OUTBOX_H */
