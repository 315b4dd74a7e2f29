/*-------------------------------------------------------------------------
 *
 * watch.h
 *	  A watch: one notify_change trigger, resolved against its table.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WATCH_H
#define NOTIFIER_WATCH_H

#include "access/tupdesc.h"

#include "capture/jsonout.h"
#include "capture/options.h"

/* a column of the firing relation that appears in events */
typedef struct WatchColumn
{
	AttrNumber	attnum;			/* InvalidAttrNumber: not in this version */
	Oid			typid;
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

extern void trigger_catalog_lookup(Oid tgoid, Oid *relid, Oid *parentid,
								   Oid *fnoid, int *nargs, char ***args);

#endif							/* NOTIFIER_WATCH_H */
