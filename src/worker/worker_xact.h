/*-------------------------------------------------------------------------
 *
 * worker_xact.h
 *	  A transaction of the worker: snapshot and SPI included.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WORKER_XACT_H
#define NOTIFIER_WORKER_XACT_H

extern void worker_xact_pin_settings(void);
extern bool worker_xact_begin(void);
extern bool worker_xact_lock_extension(void);
extern Oid	worker_xact_extension(void);
extern void worker_xact_expect_extension(Oid ext);
extern bool worker_xact_extension_changed(void);
extern void worker_xact_commit(void);
extern void worker_xact_abort(void);

#endif							/* NOTIFIER_WORKER_XACT_H */
