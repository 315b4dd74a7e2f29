/*-------------------------------------------------------------------------
 *
 * queue_api.h
 *	  Consuming notifier.queue with a visibility timeout: read(), and
 *	  add_queue()'s max_reads.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_QUEUE_API_H
#define NOTIFIER_QUEUE_API_H

#include "fmgr.h"

extern void queue_max_reads_arg(FunctionCallInfo fcinfo, int argno, Oid queue_relid,
								Datum *value, char *null);

#endif							/* NOTIFIER_QUEUE_API_H */
