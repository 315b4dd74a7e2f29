/*-------------------------------------------------------------------------
 *
 * webhook_secret.c
 *	  A webhook route's secret and the signing key it stands for: checked
 *	  by notifier.add_webhook(), decoded by the worker when it loads the
 *	  route.
 *
 * The key is the secret's bytes, or, for a secret "whsec_<base64>" (the
 * form Standard Webhooks and Svix hand out), the decoded base64.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"

#include "common/webhook_secret.h"

#define WHSEC_PREFIX "whsec_"

/*
 * The signing key of a secret; errors out for a secret that cannot be one.
 */
char *
webhook_secret_key(const char *secret, int *keylen)
{
	size_t		len = strlen(secret);

#if PG_VERSION_NUM < 140000
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("signing webhooks needs PostgreSQL 14 or later")));
#endif
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret must not be empty"),
				 errhint("Pass NULL for unsigned requests.")));
	if (strncmp(secret, WHSEC_PREFIX, strlen(WHSEC_PREFIX)) == 0)
	{
		const char *b64 = secret + strlen(WHSEC_PREFIX);
		int			b64len = strlen(b64);
		char	   *key = palloc(pg_b64_dec_len(b64len) + 1);
		int			n = b64len > 0 ? pg_b64_decode(b64, b64len, key, pg_b64_dec_len(b64len)) : -1;

		if (n <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("secret \"%s...\" is not valid base64 after \"%s\"",
							WHSEC_PREFIX, WHSEC_PREFIX),
					 errhint("A secret is either any text, or \"whsec_\" followed by the base64 of the key.")));
		*keylen = n;
		return key;
	}
	*keylen = len;
	return pstrdup(secret);
}
