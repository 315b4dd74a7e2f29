/*-------------------------------------------------------------------------
 *
 * payloads.h
 *	  notifier.payloads: where oversize events are kept.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_PAYLOADS_H
#define NOTIFIER_PAYLOADS_H

#include "datatype/timestamp.h"

extern void payload_lock(void);
extern int64 payload_store(const char *event, const char *channel);
extern bool payload_reference(const char *payload, int64 *ref);
extern char *payload_fetch(int64 ref, const char *channel);
extern char *payload_event_id(const char *payload);

#endif							/* NOTIFIER_PAYLOADS_H */
