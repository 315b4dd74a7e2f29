/*-------------------------------------------------------------------------
 *
 * nats_api.c
 *	  notifier.add_nats(): a NATS JetStream route, every argument checked.
 *
 * The route is a remote route of the delivery engine, like a webhook: what
 * the worker does with it is in worker/sinks/nats_sink.c.  Everything that
 * can be checked without the server is checked here, so that a typo is an
 * ERROR now rather than a dead letter later:
 *
 * - urls: one or more nats:// or tls:// URLs, comma-separated, host and
 *	 optional port only, all of one scheme; no credentials in them (they
 *	 would be shown in route_list: token, username and password are
 *	 arguments of their own); hosts in pg_notifier.allowed_hosts when that
 *	 is set.  Which addresses they resolve to is checked against
 *	 pg_notifier.denied_networks when the worker connects.
 * - subject: a template (common/nats_subject.c).
 * - auth: a token, or a username with its password, or a credentials file,
 *	 or none; TLS files (CA, client certificate and key, the last two
 *	 together).
 * - files: the worker reads them as the server's OS user, so naming one is
 *	 reading a server file: it takes superuser or pg_read_server_files, as
 *	 COPY FROM a file does.  They must be absolute paths, and readable now;
 *	 one that becomes unreadable later fails its route's deliveries with
 *	 the reason.
 * - headers: a JSON object of strings, not Nats-* (JetStream's own, among
 *	 them Nats-Msg-Id) nor pg-notifier-*.
 * - max_per_second: as add_webhook()'s.  The engine's rate counts messages;
 *	 a route with one sends each event as a message of its own (batch_size
 *	 1, as for ordered => 'route'), so that it caps publishes per second.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "api/route_options.h"
#include "api/routes_api.h"
#include "common/nats_subject.h"
#include "common/sqlutil.h"
#include "pg_notifier.h"

#define DEFAULT_HINT "Omit the argument for its default."

/* the arguments of notifier.add_nats(), by position */
#define ADD_NATS_ARG_CHANNEL 0
#define ADD_NATS_ARG_URLS 1
#define ADD_NATS_ARG_SUBJECT 2
#define ADD_NATS_ARG_TOKEN 3
#define ADD_NATS_ARG_USERNAME 4
#define ADD_NATS_ARG_PASSWORD 5
#define ADD_NATS_ARG_CREDS_FILE 6
#define ADD_NATS_ARG_TLS_CA_FILE 7
#define ADD_NATS_ARG_HEADERS 8
#define ADD_NATS_ARG_MAX_ATTEMPTS 9
#define ADD_NATS_ARG_TIMEOUT_MS 10
#define ADD_NATS_ARG_CONCURRENCY 11
#define ADD_NATS_ARG_ORDERED 12
#define ADD_NATS_ARG_FILTER 13
#define ADD_NATS_ARG_TRANSFORM 14
#define ADD_NATS_ARG_TLS_CERT_FILE 15
#define ADD_NATS_ARG_TLS_KEY_FILE 16
#define ADD_NATS_ARG_MAX_PER_SECOND 17

#define MAX_ATTEMPTS 100
#define MAX_TIMEOUT_MS 600000
#define MAX_CONCURRENCY 10000
#define MAX_URLS_BYTES 2048
#define MAX_URLS 16
#define MAX_SECRET_BYTES 4096
#define MAX_PATH_BYTES 1024

/*
 * The events of one message of the delivery engine (batch_size): each is
 * its own publish, but their bookkeeping is the message's, once (see
 * worker/sinks/nats_sink.c).  A route ordered by route sends one event at a
 * time: a batch whose middle event failed would, retried, be stored after
 * its later events.
 */
#define NATS_BATCH_EVENTS 100

/* headers JetStream or pg_notifier sets */
static const char *const reserved_headers[] = {"nats-*", "pg-notifier-*", NULL};

static void
bad_urls(const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", problem),
			 errhint("Give one or more nats://host:port or tls://host:port URLs, comma-separated%s; pass credentials as token, username and password.",
					 notifier_allowed_hosts[0] ? ", of hosts in pg_notifier.allowed_hosts" : "")));
}

/*
 * One URL: scheme://host[:port][/]; *tls says which scheme.  A host is a
 * name (letters, digits, '-', '.', '_'), an IPv4 address or an IPv6 one in
 * brackets.
 */
static void
check_one_url(const char *url, bool *tls)
{
	const char *host;
	const char *end;
	char	   *hostname;

	if (pg_strncasecmp(url, "nats://", 7) == 0)
	{
		*tls = false;
		host = url + 7;
	}
	else if (pg_strncasecmp(url, "tls://", 6) == 0)
	{
		*tls = true;
		host = url + 6;
	}
	else
	{
		bad_urls(psprintf("url \"%s\" is not a nats:// or tls:// URL", clip_for_message(url)));
		return;					/* not reached */
	}
	if (strchr(host, '@') != NULL)
		bad_urls(psprintf("url \"%s\" contains credentials", clip_for_message(url)));
	if (*host == '[')
	{
		end = strchr(host, ']');
		if (end == NULL || end == host + 1 || strspn(host + 1, "0123456789abcdefABCDEF:.") != (size_t) (end - host - 1))
			bad_urls(psprintf("url \"%s\" has no valid host", clip_for_message(url)));
		hostname = pnstrdup(host + 1, end - host - 1);
		end++;
	}
	else
	{
		end = host + strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._");
		if (end == host)
			bad_urls(psprintf("url \"%s\" has no valid host", clip_for_message(url)));
		hostname = pnstrdup(host, end - host);
	}
	if (*end == ':')
	{
		const char *digits = end + 1;
		size_t		n = strspn(digits, "0123456789");
		long		port = n > 0 && n <= 5 ? strtol(digits, NULL, 10) : 0;

		if (port < 1 || port > 65535)
			bad_urls(psprintf("url \"%s\" has no valid port", clip_for_message(url)));
		end = digits + n;
	}
	if (*end == '/')
		end++;
	if (*end != '\0')
		bad_urls(psprintf("url \"%s\" has more than a host and a port", clip_for_message(url)));
	if (!route_host_allowed(hostname))
		bad_urls(psprintf("host \"%s\" is not in pg_notifier.allowed_hosts",
						  clip_for_message(hostname)));
}

/* the URL list; returns whether it speaks TLS */
static bool
check_urls(const char *urls)
{
	char	   *copy;
	char	   *item;
	char	   *save = NULL;
	int			n = 0;
	bool		any_tls = false;
	bool		any_plain = false;

	if (strlen(urls) > MAX_URLS_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("urls is too long"),
				 errdetail("It is %zu bytes; the limit is %d bytes.", strlen(urls), MAX_URLS_BYTES)));
	copy = pstrdup(urls);
	for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		bool		tls;

		while (*item == ' ')
			item++;
		for (char *e = item + strlen(item); e > item && e[-1] == ' '; e--)
			e[-1] = '\0';
		if (*item == '\0')
			continue;
		check_one_url(item, &tls);
		any_tls |= tls;
		any_plain |= !tls;
		if (++n > MAX_URLS)
			bad_urls(psprintf("urls has more than %d URLs", MAX_URLS));
	}
	if (n == 0)
		bad_urls(pstrdup("urls has no URL"));
	if (any_tls && any_plain)
		bad_urls(pstrdup("urls mixes nats:// and tls:// URLs"));
	return any_tls;
}

/* a text argument that, given, must not be empty nor too long; NULL: not given */
static char *
optional_text(FunctionCallInfo fcinfo, int argno, const char *name, int max_bytes)
{
	char	   *value;

	if (PG_ARGISNULL(argno))
		return NULL;
	value = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", name),
				 errhint("Pass NULL (or omit it) for none.")));
	if (strlen(value) > (size_t) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long", name),
				 errdetail("The limit is %d bytes.", max_bytes)));
	return value;
}

/* a file the worker will read as the server's OS user */
static void
check_file_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	char	   *path = optional_text(fcinfo, argno, name, MAX_PATH_BYTES);

	if (path == NULL)
		return;
	if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to name a server file as %s", name),
				 errdetail("The worker reads it as the database server's operating system user."),
				 errhint("Only superusers and roles with privileges of pg_read_server_files may name one.")));
	if (path[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be an absolute path", name),
				 errhint("Give the file's full path on the database server.")));
	if (access(path, R_OK) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read %s \"%s\": %m", name, clip_for_message(path)),
				 errhint("The file must be readable by the database server's operating system user.")));
}

static void
auth_conflict(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", what),
			 errhint("Give a token, or a username and a password, or a creds_file, or none of them.")));
}

PG_FUNCTION_INFO_V1(notifier_add_nats);

/*
 * notifier.add_nats(channel, urls, subject, token, username, password,
 *					 creds_file, tls_ca_file, headers, max_attempts,
 *					 timeout_ms, concurrency, ordered, filter, transform,
 *					 tls_cert_file, tls_key_file) -> route id
 */
Datum
notifier_add_nats(PG_FUNCTION_ARGS)
{
	Oid			argtypes[15 + ROUTE_OPTION_COUNT] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, JSONBOID, INT4OID, INT4OID, INT4OID, InvalidOid, TEXTOID, TEXTOID, FLOAT8OID,
	ROUTE_OPTION_TYPES};
	Datum		values[15 + ROUTE_OPTION_COUNT];
	char		nulls[15 + ROUTE_OPTION_COUNT];
	int			noptions;
	const char *option_columns;
	const char *option_params;
	char	   *subject;
	char	   *problem;
	char	   *token;
	char	   *username;
	char	   *password;
	char	   *creds;
	bool		tls;
	int64		id = 0;

	check_channel_arg(fcinfo, ADD_NATS_ARG_CHANNEL);
	require_arg(fcinfo, ADD_NATS_ARG_URLS, "urls",
				"Give one or more nats:// or tls:// URLs, comma-separated.");
	tls = check_urls(text_to_cstring(PG_GETARG_TEXT_PP(ADD_NATS_ARG_URLS)));

	require_arg(fcinfo, ADD_NATS_ARG_SUBJECT, "subject", DEFAULT_HINT);
	subject = text_to_cstring(PG_GETARG_TEXT_PP(ADD_NATS_ARG_SUBJECT));
	problem = nats_subject_problem(subject);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", problem),
				 errhint("A subject is dot-separated tokens of printable ASCII without \"*\" and \">\"; {channel}, {schema}, {table} and {op} stand for the event's.")));

	token = optional_text(fcinfo, ADD_NATS_ARG_TOKEN, "token", MAX_SECRET_BYTES);
	username = optional_text(fcinfo, ADD_NATS_ARG_USERNAME, "username", MAX_SECRET_BYTES);
	password = optional_text(fcinfo, ADD_NATS_ARG_PASSWORD, "password", MAX_SECRET_BYTES);
	creds = optional_text(fcinfo, ADD_NATS_ARG_CREDS_FILE, "creds_file", MAX_PATH_BYTES);
	if (token != NULL && (username != NULL || password != NULL))
		auth_conflict("token cannot be given with username or password");
	if ((username != NULL) != (password != NULL))
		auth_conflict("username and password must be given together");
	if (creds != NULL && (token != NULL || username != NULL))
		auth_conflict("creds_file cannot be given with token, username or password");
	check_file_arg(fcinfo, ADD_NATS_ARG_CREDS_FILE, "creds_file");
	check_file_arg(fcinfo, ADD_NATS_ARG_TLS_CA_FILE, "tls_ca_file");
	check_file_arg(fcinfo, ADD_NATS_ARG_TLS_CERT_FILE, "tls_cert_file");
	check_file_arg(fcinfo, ADD_NATS_ARG_TLS_KEY_FILE, "tls_key_file");
	if (PG_ARGISNULL(ADD_NATS_ARG_TLS_CERT_FILE) != PG_ARGISNULL(ADD_NATS_ARG_TLS_KEY_FILE))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tls_cert_file and tls_key_file must be given together"),
				 errhint("A client certificate needs its private key.")));
	if (!tls && (!PG_ARGISNULL(ADD_NATS_ARG_TLS_CA_FILE) || !PG_ARGISNULL(ADD_NATS_ARG_TLS_CERT_FILE)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("TLS files need tls:// URLs"),
				 errhint("Give the servers as tls://host:port.")));

	require_arg(fcinfo, ADD_NATS_ARG_HEADERS, "headers", DEFAULT_HINT);
	check_header_object(PG_GETARG_JSONB_P(ADD_NATS_ARG_HEADERS), reserved_headers,
						"Leave out Nats-* (JetStream's, Nats-Msg-Id among them) and pg-notifier-*.");
	(void) route_int_arg(fcinfo, ADD_NATS_ARG_MAX_ATTEMPTS, "max_attempts", MAX_ATTEMPTS);
	(void) route_int_arg(fcinfo, ADD_NATS_ARG_TIMEOUT_MS, "timeout_ms", MAX_TIMEOUT_MS);
	(void) route_int_arg(fcinfo, ADD_NATS_ARG_CONCURRENCY, "concurrency", MAX_CONCURRENCY);
	check_max_per_second(fcinfo, ADD_NATS_ARG_MAX_PER_SECOND);
	require_arg(fcinfo, ADD_NATS_ARG_ORDERED, "ordered", DEFAULT_HINT);
	/* notifier.ordering, whose OID this library does not know */
	argtypes[11] = get_fn_expr_argtype(fcinfo->flinfo, ADD_NATS_ARG_ORDERED);

	/*
	 * The parameters of the INSERT, by the argument each comes from; the
	 * secret ($4) is the token, or else the password.
	 */
	{
		static const int from[15] = {
			ADD_NATS_ARG_CHANNEL, ADD_NATS_ARG_URLS, ADD_NATS_ARG_SUBJECT,
			ADD_NATS_ARG_TOKEN, ADD_NATS_ARG_USERNAME, ADD_NATS_ARG_CREDS_FILE,
			ADD_NATS_ARG_TLS_CA_FILE, ADD_NATS_ARG_HEADERS, ADD_NATS_ARG_MAX_ATTEMPTS,
			ADD_NATS_ARG_TIMEOUT_MS, ADD_NATS_ARG_CONCURRENCY, ADD_NATS_ARG_ORDERED,
			ADD_NATS_ARG_TLS_CERT_FILE, ADD_NATS_ARG_TLS_KEY_FILE,
			ADD_NATS_ARG_MAX_PER_SECOND
		};

		for (int i = 0; i < lengthof(from); i++)
		{
			int			a = from[i];

			if (a == ADD_NATS_ARG_TOKEN && token == NULL)
				a = ADD_NATS_ARG_PASSWORD;
			values[i] = PG_ARGISNULL(a) ? (Datum) 0 : PG_GETARG_DATUM(a);
			nulls[i] = PG_ARGISNULL(a) ? 'n' : ' ';
		}
	}

	noptions = route_options_args(fcinfo, ADD_NATS_ARG_FILTER, ADD_NATS_ARG_TRANSFORM,
								  values + 15, nulls + 15, 16, &option_columns, &option_params);

	warn_if_no_worker();
	routes_execute(psprintf("INSERT INTO notifier.routes (channel, kind, url, subject, secret,"
							" nats_username, creds_file, tls_ca_file, headers, max_attempts,"
							" timeout_ms, concurrency, ordered, tls_cert_file, tls_key_file,"
							" max_per_second, batch_size%s)"
							" VALUES ($1, 'nats', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
							"  CASE WHEN $12::pg_catalog.text OPERATOR(pg_catalog.=) 'route'"
							"    OR $15 IS NOT NULL THEN 1"
							"   ELSE " CppAsString2(NATS_BATCH_EVENTS) " END%s)"
							" RETURNING id", option_columns, option_params),
				   15 + noptions, argtypes, values, nulls, SPI_OK_INSERT_RETURNING, &id);
	PG_RETURN_INT64(id);
}
