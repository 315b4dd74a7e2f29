/*-------------------------------------------------------------------------
 *
 * backfill_query.h
 *	  The two queries of a backfill batch, built alike by backfill() (to
 *	  check them) and by the worker (to run them).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_BACKFILL_QUERY_H
#define NOTIFIER_BACKFILL_QUERY_H

#include "fmgr.h"
#include "utils/relcache.h"

#include "capture/watch.h"

/* longest batch_size: a batch's keys are held in memory */
#define BACKFILL_MAX_BATCH 100000

typedef struct BackfillScan
{
	char	   *relation;		/* [ONLY] schema.table */
	int			nkeys;
	Oid		   *keytypes;		/* of the key columns: the queries' $n */
	char	  **keynames;		/* quoted */
	char	  **lt;				/* OPERATOR(schema.<) of each key column */
	char	  **le;
	char	  **eq;
	char	  **ge;
	char	  **gt;
	FmgrInfo   *cmp;			/* the btree comparison of each key column */
	Oid		   *collations;		/* and its collation */
	int			natts;			/* the columns the read query returns */
	AttrNumber *attnums;		/* of the relation, in that order */
	char	  **colnames;		/* their names, quoted */
} BackfillScan;

extern void backfill_scan_init(BackfillScan *scan, Relation rel, const Watch *w);
extern char *backfill_lock_sql(const BackfillScan *scan, bool after);
extern char *backfill_read_sql(const BackfillScan *scan, const char *where,
							   bool after);
extern int	backfill_compare_keys(const BackfillScan *scan, const Datum *a,
								  const Datum *b);
extern int	backfill_nparams(const BackfillScan *scan);
extern Oid *backfill_param_types(const BackfillScan *scan);

#endif							/* NOTIFIER_BACKFILL_QUERY_H */
