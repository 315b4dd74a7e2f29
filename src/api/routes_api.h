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
#include "utils/jsonb.h"

extern uint64 routes_execute(const char *sql, int nargs, Oid *argtypes,
							 Datum *values, const char *nulls,
							 int expected_rc, int64 *returned_id);
extern void check_channel_arg(FunctionCallInfo fcinfo, int argno);
extern void warn_if_no_worker(void);
extern void route_does_not_exist(int64 route_id) pg_attribute_noreturn();

/* webhook_api.c: what add_nats() checks the same way */
extern int32 route_int_arg(FunctionCallInfo fcinfo, int argno, const char *name, int32 max);
extern void check_max_per_second(FunctionCallInfo fcinfo, int argno);
extern bool route_host_allowed(const char *host);
extern void check_header_object(Jsonb *headers, const char *const *reserved,
								const char *hint);

#endif							/* NOTIFIER_ROUTES_API_H */
