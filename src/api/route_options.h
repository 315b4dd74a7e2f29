/*-------------------------------------------------------------------------
 *
 * route_options.h
 *	  The options every route has: filter and transform.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTE_OPTIONS_H
#define NOTIFIER_ROUTE_OPTIONS_H

#include "fmgr.h"

/* how many values route_options_args() gives, and their types */
#define ROUTE_OPTION_COUNT 3
#define ROUTE_OPTION_TYPES JSONPATHOID, TEXTOID, REGROLEOID
extern int	route_options_args(FunctionCallInfo fcinfo, int filter_argno,
							   int transform_argno, Datum *values, char *nulls,
							   int first_param, const char **columns,
							   const char **params);

#endif							/* NOTIFIER_ROUTE_OPTIONS_H */
