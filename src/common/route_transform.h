/*-------------------------------------------------------------------------
 *
 * route_transform.h
 *	  What a route's transform must be: checked where it is set and where
 *	  it runs.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTE_TRANSFORM_H
#define NOTIFIER_ROUTE_TRANSFORM_H

extern void transform_check_signature(Oid fn);
extern Oid	transform_lookup(const char *signature, int64 route_id);

#endif							/* NOTIFIER_ROUTE_TRANSFORM_H */
