/*-------------------------------------------------------------------------
 *
 * prune.h
 *	  Deleting old rows of the extension's tables, in small batches.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_PRUNE_H
#define NOTIFIER_PRUNE_H

#include "datatype/timestamp.h"

extern TimestampTz prune_table(const char *table, const char *time_column,
							   const char *condition, int retention_secs);

#endif							/* NOTIFIER_PRUNE_H */
