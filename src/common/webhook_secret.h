/*-------------------------------------------------------------------------
 *
 * webhook_secret.h
 *	  A webhook route's secret and its signing key.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WEBHOOK_SECRET_H
#define NOTIFIER_WEBHOOK_SECRET_H

extern char *webhook_secret_key(const char *secret, int *keylen);

#endif							/* NOTIFIER_WEBHOOK_SECRET_H */
