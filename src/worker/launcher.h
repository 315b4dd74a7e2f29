/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher: starts and restarts one worker per database.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_LAUNCHER_H
#define NOTIFIER_LAUNCHER_H

#include "nodes/pg_list.h"

/* seconds before a worker that stopped is started again */
#define NOTIFIER_RESTART_SECONDS 5

extern void launcher_register(void);

#endif							/* NOTIFIER_LAUNCHER_H */
