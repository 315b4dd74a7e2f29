/*-------------------------------------------------------------------------
 *
 * watch_api.h
 *	  What the SQL functions share with watch(): the one-expression check.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WATCH_API_H
#define NOTIFIER_WATCH_API_H

extern bool parses_as_one_expression(const char *query, const char *what);

#endif							/* NOTIFIER_WATCH_API_H */
