/*-------------------------------------------------------------------------
 *
 * webhook_sink.h
 *	  The webhook sink: events written into notifier.deliveries.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WEBHOOK_SINK_H
#define NOTIFIER_WEBHOOK_SINK_H

#include "datatype/timestamp.h"
#include "worker/routes.h"

extern void webhook_sink_write(Route *route, char **payloads, char **events,
							   int npayloads,
							   TimestampTz received_at);

#endif							/* NOTIFIER_WEBHOOK_SINK_H */
