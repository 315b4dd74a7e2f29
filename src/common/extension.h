/*-------------------------------------------------------------------------
 *
 * extension.h
 *	  The extension's own objects: is it installed, where are its tables,
 *	  and the plans of its queries.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_EXTENSION_H
#define NOTIFIER_EXTENSION_H

#include "executor/spi.h"
#include "utils/guc.h"

/* what to do when the extension's objects are not as it made them */
#define NOTIFIER_REINSTALL_HINT \
	"Reinstall the extension: DROP EXTENSION pg_notifier; CREATE EXTENSION pg_notifier;"

/*
 * Set while the worker writes its own bookkeeping columns of notifier.routes
 * (worker/route_health.c): the statement trigger then wakes nobody.
 */
extern bool notifier_routes_quiet;

extern Oid	notifier_extension_oid(void);
extern bool notifier_extension_current(Oid extoid);
extern Oid	notifier_table_oid(const char *relname);
extern SPIPlanPtr keep_plan(SPIPlanPtr *plan, const char *sql, int nargs,
							const Oid *argtypes);
extern void plan_for_indexes(GucAction action, bool ordered);

#endif							/* NOTIFIER_EXTENSION_H */
