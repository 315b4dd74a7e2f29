/*-------------------------------------------------------------------------
 *
 * database_list.h
 *	  pg_notifier.databases: '*' or a list of database names.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_DATABASE_LIST_H
#define NOTIFIER_DATABASE_LIST_H

#include "nodes/pg_list.h"

extern bool databases_all(const char *value);
extern bool parse_database_list(const char *value, List **dbnames);
extern bool database_has_worker(const char *dbname);

#endif							/* NOTIFIER_DATABASE_LIST_H */
