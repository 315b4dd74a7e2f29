/*-------------------------------------------------------------------------
 *
 * route_health.h
 *	  Disabling dead endpoints: a remote route's outcomes, 410 Gone and
 *	  disable_after.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_ROUTE_HEALTH_H
#define NOTIFIER_ROUTE_HEALTH_H

extern void route_health_outcome(int64 route_id, bool delivered, bool gone,
								 const char *failure);
extern bool route_health_disabled(int64 route_id);
extern void route_health_forget(void);

#endif							/* NOTIFIER_ROUTE_HEALTH_H */
