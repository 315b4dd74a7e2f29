/*-------------------------------------------------------------------------
 *
 * queue_table.h
 *	  What a queue table must look like.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_QUEUE_TABLE_H
#define NOTIFIER_QUEUE_TABLE_H

typedef struct QueueColumns
{
	Oid			payload_type;	/* JSONBOID or JSONOID */
	bool		has_received_at;
} QueueColumns;

extern void queue_table_check(Oid relid, QueueColumns *columns);

#endif							/* NOTIFIER_QUEUE_TABLE_H */
