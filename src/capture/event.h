/*-------------------------------------------------------------------------
 *
 * event.h
 *	  A watch (one notify_change trigger, resolved against its table) and
 *	  the JSON event built from one change.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_EVENT_H
#define NOTIFIER_EVENT_H

#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "capture/jsonout.h"
#include "capture/options.h"

typedef enum ChangeOp
{
	OP_INSERT,
	OP_UPDATE,
	OP_DELETE,
	OP_TRUNCATE
} ChangeOp;

/* a column of the firing relation that appears in events */
typedef struct WatchColumn
{
	AttrNumber	attnum;
	int16		typlen;
	bool		typbyval;
	char	   *json_name;		/* the column name as a JSON string */
	JsonTypeInfo *type;
} WatchColumn;

/*
 * Everything the per-row path needs, computed once per trigger (see
 * watch_cache.c), in the Watch's own memory context.
 */
typedef struct Watch
{
	Oid			tgoid;			/* hash key: the pg_trigger OID */
	bool		valid;			/* false once an invalidation hit it */
	MemoryContext cxt;
	Oid			relid;			/* the firing relation */
	Oid			watched_relid;	/* the relation watch() was called on; for a
								 * partition, the partitioned table */
	WatchOptions opts;			/* channel filled in */
	char	   *schema_name;	/* names of watched_relid */
	char	   *table_name;
	char	   *json_schema;	/* the same as JSON strings */
	char	   *json_table;
	int			ncolumns;		/* columns that appear in row/old */
	WatchColumn *columns;
	int			nkeys;			/* key columns, in index order; 0 if none */
	WatchColumn *keys;
	TupleDesc	tupdesc;		/* of the firing relation, for held rows */
} Watch;

/* one change, as the trigger saw it */
typedef struct ChangeEvent
{
	ChangeOp	op;
	TupleTableSlot *oldslot;	/* UPDATE, DELETE */
	TupleTableSlot *newslot;	/* INSERT, UPDATE */
	bool	   *changed;		/* UPDATE: per Watch.columns entry */
	TimestampTz ts;				/* start of the statement that made it */
} ChangeEvent;

extern bool event_columns_differ(const WatchColumn *cols, int ncols,
								 TupleTableSlot *oldslot, TupleTableSlot *newslot,
								 bool *changed);
extern void event_append_envelope(StringInfo buf, const Watch *w, ChangeOp op,
								  TimestampTz ts);
extern void event_append_key(StringInfo buf, const Watch *w,
							 const ChangeEvent *ev);
extern void event_append_body(StringInfo buf, const Watch *w,
							  const ChangeEvent *ev);

#endif							/* NOTIFIER_EVENT_H */
