/*-------------------------------------------------------------------------
 *
 * webhook_api.c
 *	  notifier.add_webhook(): a webhook route, every argument checked.
 *
 * What the worker does with the route is in sinks/remote_delivery.c (the
 * delivery engine: notifier.deliveries) and sinks/webhook_http.c (the
 * requests).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pg_notifier.h"
#include "api/route_options.h"
#include "api/routes_api.h"
#include "common/sqlutil.h"
#include "common/webhook_secret.h"

/* for an argument that has a default */
#define DEFAULT_HINT "Omit the argument for its default."

#define MAX_BATCH_SIZE 1000
#define MAX_ATTEMPTS 100
#define MAX_TIMEOUT_MS 600000
#define MAX_CONCURRENCY 100
/* as routes_max_per_second_check */
#define MAX_PER_SECOND 1000000

/* the arguments of add_webhook() past the first nine, by position */
#define ADD_WEBHOOK_ARG_FILTER 9
#define ADD_WEBHOOK_ARG_TRANSFORM 10
#define ADD_WEBHOOK_ARG_MAX_PER_SECOND 11
#define ADD_WEBHOOK_ARG_DISABLE_AFTER 12

/*
 * The longest URL accepted: browsers and servers commonly stop at 8 KB, and
 * a route's URL is shown in notifier.routes and notifier.stats.
 */
#define MAX_URL_BYTES 2048

/* headers pg_notifier sets itself */
static const char *const reserved_headers[] = {
	"content-type", "content-length", "user-agent", "host", "transfer-encoding",
	"webhook-id", "webhook-timestamp", "webhook-signature", NULL
};

/* an integer argument between 1 and max (add_webhook(), add_nats()) */
int32
route_int_arg(FunctionCallInfo fcinfo, int argno, const char *name, int32 max)
{
	int32		value;

	require_arg(fcinfo, argno, name, DEFAULT_HINT);
	value = PG_GETARG_INT32(argno);
	if (value < 1 || value > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d, not %d", name, max, value)));
	return value;
}

/* max_per_second: NULL (no limit), or a rate above 0 (add_webhook(), add_nats()) */
void
check_max_per_second(FunctionCallInfo fcinfo, int argno)
{
	float8		rate;

	if (PG_ARGISNULL(argno))
		return;
	rate = PG_GETARG_FLOAT8(argno);
	if (isnan(rate) || rate <= 0 || rate > MAX_PER_SECOND)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_per_second must be greater than 0 and at most %d, not %s",
						MAX_PER_SECOND, float8out_internal(rate)),
				 errhint("Pass NULL for no limit.")));
}

/* is the host in pg_notifier.allowed_hosts (or is that empty)? */
bool
route_host_allowed(const char *host)
{
	char	   *copy;
	List	   *hosts;
	ListCell   *lc;

	if (notifier_allowed_hosts == NULL || notifier_allowed_hosts[0] == '\0')
		return true;
	copy = pstrdup(notifier_allowed_hosts);
	if (!SplitGUCList(copy, ',', &hosts))
		return false;
	foreach(lc, hosts)
	{
		if (pg_strcasecmp(lfirst(lc), host) == 0)
			return true;
	}
	return false;
}

static void
check_url(const char *url)
{
	CURLU	   *u;
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *problem = NULL;

	if (strlen(url) > MAX_URL_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("url is too long"),
				 errdetail("It is %zu bytes; the limit is %d bytes.", strlen(url), MAX_URL_BYTES),
				 errhint("Give a shorter URL; pass large tokens in headers.")));
	for (const char *p = url; *p; p++)
		if ((unsigned char) *p <= ' ' || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("url \"%s\" contains a space or a control character",
							clip_for_message(url)),
					 errhint("Percent-encode it (%%20).")));

	u = curl_url();
	if (u == NULL)
		elog(ERROR, "out of memory");
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
		problem = psprintf("url \"%s\" is not a valid URL: %s", clip_for_message(url),
						   curl_url_strerror(rc));
	else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
			 (pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0))
		problem = psprintf("url \"%s\" is not an http or https URL", clip_for_message(url));
	else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0' ||
			 strstr(url, ":///") != NULL)
		problem = psprintf("url \"%s\" has no host", clip_for_message(url));
	else if (!route_host_allowed(host))
		problem = psprintf("host \"%s\" is not in pg_notifier.allowed_hosts",
						   clip_for_message(host));
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", problem),
				 errhint("Give an absolute http:// or https:// URL%s.",
						 notifier_allowed_hosts[0] ? " of a host in pg_notifier.allowed_hosts" : "")));
}

static bool
is_token(const char *s, int len)
{
	if (len == 0)
		return false;
	for (int i = 0; i < len; i++)
	{
		unsigned char c = s[i];

		if (!(isalnum(c) && c < 0x80) && strchr("!#$%&'*+-.^_`|~", c) == NULL)
			return false;
	}
	return true;
}

/*
 * headers: a JSON object of string values, HTTP-safe (NATS headers follow
 * the same rules), none of the reserved ones: names compared without case,
 * a reserved name ending in '*' is a prefix.  hint lists the reserved ones.
 */
void
check_header_object(Jsonb *headers, const char *const *reserved, const char *hint)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken r;
	char	   *name = NULL;

	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object of header names and values"),
				 errhint("For example '{\"Authorization\": \"Bearer abc\"}'.")));

	it = JsonbIteratorInit(&headers->root);
	while ((r = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (r == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (!is_token(v.val.string.val, v.val.string.len))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("\"%s\" is not a valid HTTP header name", clip_for_message(name)),
						 errhint("A header name is letters, digits and !#$%%&'*+-.^_`|~.")));
			for (int i = 0; reserved[i] != NULL; i++)
			{
				size_t		len = strlen(reserved[i]);
				bool		prefix = len > 0 && reserved[i][len - 1] == '*';

				if (prefix ? pg_strncasecmp(name, reserved[i], len - 1) == 0 :
					pg_strcasecmp(name, reserved[i]) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("header \"%s\" is set by pg_notifier", clip_for_message(name)),
							 errhint("%s", hint)));
			}
		}
		else if (r == WJB_VALUE)
		{
			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("the value of header \"%s\" is not a string", clip_for_message(name))));
			for (int i = 0; i < v.val.string.len; i++)
				if (v.val.string.val[i] == '\r' || v.val.string.val[i] == '\n' ||
					v.val.string.val[i] == '\0')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("the value of header \"%s\" contains a line break", clip_for_message(name))));
		}
	}
}

/* -1, 0 or 1: an interval is negative, zero or positive */
static int
interval_sign(Datum interval)
{
	Interval	zero = {0};
	int32		cmp = DatumGetInt32(DirectFunctionCall2(interval_cmp, interval,
														IntervalPGetDatum(&zero)));

	return (cmp > 0) - (cmp < 0);
}

PG_FUNCTION_INFO_V1(notifier_add_webhook);

/*
 * disable_after: continuous failure for this long disables the route
 * (worker/route_health.c); NULL never does.  It must be positive.
 */
static void
check_disable_after(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return;
	if (interval_sign(PG_GETARG_DATUM(argno)) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("disable_after must be positive"),
				 errhint("Give NULL never to disable the route, or omit it for 5 days.")));
}

/*
 * notifier.add_webhook(channel, url, headers, secret, batch_size,
 *						max_attempts, timeout_ms, concurrency, ordered,
 *						filter, transform, max_per_second, disable_after)
 *	-> route id
 *
 * ordered is a notifier.ordering (an enum of the extension, whose OID this
 * library does not know: its type is read from the call).  0.1's
 * definition, which an install runs before its update to 0.2, calls this
 * with the first nine arguments only: the columns of the others are added
 * to the INSERT when the call has them.
 */
Datum
notifier_add_webhook(PG_FUNCTION_ARGS)
{
	Oid			argtypes[9 + ROUTE_OPTION_COUNT + 2] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID,
	INT4OID, INT4OID, INT4OID, InvalidOid, ROUTE_OPTION_TYPES};
	Datum		values[9 + ROUTE_OPTION_COUNT + 2];
	char		nulls[9 + ROUTE_OPTION_COUNT + 2] = "         ";
	int			n;
	const char *option_columns;
	const char *option_params;
	StringInfoData columns;
	StringInfoData params;
	int64		id = 0;
	int			keylen;

	check_channel_arg(fcinfo, 0);
	require_arg(fcinfo, 1, "url", DEFAULT_HINT);
	check_url(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	require_arg(fcinfo, 2, "headers", DEFAULT_HINT);
	check_header_object(PG_GETARG_JSONB_P(2), reserved_headers,
						"Leave out Content-Type, Content-Length, User-Agent, Host, Transfer-Encoding and webhook-*.");
	if (!PG_ARGISNULL(3))
		(void) webhook_secret_key(text_to_cstring(PG_GETARG_TEXT_PP(3)), &keylen);
	(void) route_int_arg(fcinfo, 4, "batch_size", MAX_BATCH_SIZE);
	(void) route_int_arg(fcinfo, 5, "max_attempts", MAX_ATTEMPTS);
	(void) route_int_arg(fcinfo, 6, "timeout_ms", MAX_TIMEOUT_MS);
	(void) route_int_arg(fcinfo, 7, "concurrency", MAX_CONCURRENCY);
	require_arg(fcinfo, 8, "ordered", DEFAULT_HINT);
	/* notifier.ordering: 'none', 'key' or 'route' (0.1's boolean casts to it) */
	argtypes[8] = get_fn_expr_argtype(fcinfo->flinfo, 8);

	for (int i = 0; i < 9; i++)
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';

	/*
	 * The arguments past the ninth go into the INSERT only when the call has
	 * them: 0.1's add_webhook(), which an install runs before its update to
	 * 0.2, has nine, and its notifier.routes none of their columns.
	 */
	n = 9 + route_options_args(fcinfo, ADD_WEBHOOK_ARG_FILTER, ADD_WEBHOOK_ARG_TRANSFORM,
							   values + 9, nulls + 9, 10, &option_columns, &option_params);
	initStringInfo(&columns);
	initStringInfo(&params);
	appendStringInfo(&columns, "ordered%s", option_columns);
	appendStringInfo(&params, "$9%s", option_params);
	if (PG_NARGS() > ADD_WEBHOOK_ARG_DISABLE_AFTER)
	{
		check_max_per_second(fcinfo, ADD_WEBHOOK_ARG_MAX_PER_SECOND);
		check_disable_after(fcinfo, ADD_WEBHOOK_ARG_DISABLE_AFTER);
		for (int argno = ADD_WEBHOOK_ARG_MAX_PER_SECOND; argno <= ADD_WEBHOOK_ARG_DISABLE_AFTER; argno++)
		{
			values[n] = PG_ARGISNULL(argno) ? (Datum) 0 : PG_GETARG_DATUM(argno);
			nulls[n] = PG_ARGISNULL(argno) ? 'n' : ' ';
			argtypes[n] = argno == ADD_WEBHOOK_ARG_MAX_PER_SECOND ? FLOAT8OID : INTERVALOID;
			appendStringInfo(&params, ", $%d", ++n);
		}
		appendStringInfoString(&columns, ", max_per_second, disable_after");
	}
	warn_if_no_worker();
	routes_execute(psprintf("INSERT INTO notifier.routes (channel, kind, url, headers, secret,"
							" batch_size, max_attempts, timeout_ms, concurrency, %s)"
							" VALUES ($1, 'webhook', $2, $3, $4, $5, $6, $7, $8, %s) RETURNING id",
							columns.data, params.data),
				   n, argtypes, values, nulls, SPI_OK_INSERT_RETURNING, &id);
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(notifier_set_secret);

/*
 * notifier.set_secret(route_id, secret, keep_previous interval)
 *
 * Gives a webhook route a new secret.  For keep_previous after now, the
 * secret it had is kept too, and every request carries both signatures, the
 * new one first: receivers can move to the new secret at any time in that
 * window.  A route without a secret gets one; zero keeps nothing.
 */
Datum
notifier_set_secret(PG_FUNCTION_ARGS)
{
	Oid			argtypes[3] = {INT8OID, TEXTOID, INTERVALOID};
	Datum		values[3];
	Interval	zero = {0};
	int			keylen;

	require_arg(fcinfo, 0, "route id", "See notifier.route_list for the routes.");
	require_arg(fcinfo, 1, "secret", "Give the new secret, plain text or whsec_ followed by base64.");
	require_arg(fcinfo, 2, "keep_previous", DEFAULT_HINT);
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret must not be empty"),
				 errhint("Give the new secret: any text, or \"whsec_\" followed by the base64 of the key.")));
	(void) webhook_secret_key(text_to_cstring(PG_GETARG_TEXT_PP(1)), &keylen);
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, PG_GETARG_DATUM(2),
										  IntervalPGetDatum(&zero))) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("keep_previous must not be negative"),
				 errhint("Give 0 to stop signing with the previous secret at once.")));

	for (int i = 0; i < 3; i++)
		values[i] = PG_GETARG_DATUM(i);
	if (routes_execute("UPDATE notifier.routes SET"
					   " previous_secret = CASE WHEN $3 OPERATOR(pg_catalog.>) interval '0'"
					   "   THEN secret END,"
					   " previous_secret_until = CASE WHEN $3 OPERATOR(pg_catalog.>) interval '0'"
					   "   AND secret IS NOT NULL"
					   "   THEN pg_catalog.now() OPERATOR(pg_catalog.+) $3 END,"
					   " secret = $2"
					   " WHERE id OPERATOR(pg_catalog.=) $1 AND kind OPERATOR(pg_catalog.=) 'webhook'"
					   " RETURNING id",
					   3, argtypes, values, NULL, SPI_OK_UPDATE_RETURNING, NULL) == 1)
		PG_RETURN_VOID();
	if (routes_execute("SELECT id FROM notifier.routes WHERE id OPERATOR(pg_catalog.=) $1",
					   1, argtypes, values, NULL, SPI_OK_SELECT, NULL) == 1)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("route " INT64_FORMAT " is not a webhook route", PG_GETARG_INT64(0)),
				 errdetail("Only webhook routes have a secret.")));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("route " INT64_FORMAT " does not exist", PG_GETARG_INT64(0)),
			 errhint("See notifier.route_list for the routes.")));
	PG_RETURN_VOID();			/* not reached */
}
