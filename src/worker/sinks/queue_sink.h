/*-------------------------------------------------------------------------
 *
 * queue_sink.h
 *	  The queue sink: events written into a queue table.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_QUEUE_SINK_H
#define NOTIFIER_QUEUE_SINK_H

#include "datatype/timestamp.h"
#include "worker/routes.h"

extern void queue_sink_write(Route *route, char **payloads, int npayloads,
							 TimestampTz received_at);
extern void queue_sink_free(Route *route);

#endif							/* NOTIFIER_QUEUE_SINK_H */
