/*-------------------------------------------------------------------------
 *
 * routes_api.h
 *	  What the SQL functions that manage routes share.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTES_API_H
#define NOTIFIER_ROUTES_API_H

#include "fmgr.h"

extern uint64 routes_execute(const char *sql, int nargs, Oid *argtypes,
							 Datum *values, const char *nulls,
							 int expected_rc, int64 *returned_id);
extern void check_channel_arg(FunctionCallInfo fcinfo, int argno);
extern void warn_if_no_worker(void);
extern void route_does_not_exist(int64 route_id) pg_attribute_noreturn();

#endif							/* NOTIFIER_ROUTES_API_H */
