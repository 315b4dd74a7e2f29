/*-------------------------------------------------------------------------
 *
 * webhook_sign.c
 *	  Standard Webhooks signatures (https://www.standardwebhooks.com/):
 *	  webhook-signature: v1,<base64 of HMAC-SHA256(key, id.timestamp.body)>
 *
 * The key comes from the route's secret (webhook_secret.c).  PostgreSQL's
 * own HMAC and base64 do the work.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#if PG_VERSION_NUM >= 140000
#include "common/hmac.h"
#endif
#include "common/sha2.h"
#include "utils/resowner.h"

#include "worker/sinks/webhook_sign.h"

/*
 * "v1,<signature>" for a request; palloc'd.
 */
char *
webhook_signature(const char *key, int keylen, const char *msg_id,
				  int64 timestamp, const char *body, size_t bodylen)
{
#if PG_VERSION_NUM >= 140000
	static ResourceOwner owner = NULL;
	ResourceOwner save_owner = CurrentResourceOwner;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		ts[32];
	pg_hmac_ctx *ctx;
	int			enclen = pg_b64_enc_len(PG_SHA256_DIGEST_LENGTH);
	char	   *result = palloc(3 + enclen + 1);
	int			n;

	/*
	 * With OpenSSL, the HMAC context is tracked by the current resource
	 * owner; the worker signs outside any transaction, where there is none.
	 */
	if (CurrentResourceOwner == NULL)
	{
		if (owner == NULL)
			owner = ResourceOwnerCreate(NULL, "pg_notifier signing");
		CurrentResourceOwner = owner;
	}
	ctx = pg_hmac_create(PG_SHA256);

	snprintf(ts, sizeof(ts), INT64_FORMAT, timestamp);
	if (ctx == NULL ||
		pg_hmac_init(ctx, (const uint8 *) key, keylen) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) msg_id, strlen(msg_id)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ".", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ts, strlen(ts)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ".", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) body, bodylen) < 0 ||
		pg_hmac_final(ctx, digest, sizeof(digest)) < 0)
	{
		pg_hmac_free(ctx);
		CurrentResourceOwner = save_owner;
		elog(ERROR, "could not compute an HMAC-SHA256 signature");
	}
	pg_hmac_free(ctx);
	CurrentResourceOwner = save_owner;

	memcpy(result, "v1,", 3);
	n = pg_b64_encode((const char *) digest, sizeof(digest), result + 3, enclen);
	if (n < 0)
		elog(ERROR, "could not encode a signature");
	result[3 + n] = '\0';
	return result;
#else
	elog(ERROR, "signing webhooks needs PostgreSQL 14 or later");
	return NULL;
#endif
}
