/*-------------------------------------------------------------------------
 *
 * webhook_sign.h
 *	  Standard Webhooks signatures.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_SIGN_H
#define NOTIFIER_SIGN_H

extern char *webhook_signature(const char *key, int keylen, const char *msg_id,
							   int64 timestamp, const char *body, size_t bodylen);

#endif							/* NOTIFIER_SIGN_H */
