/*-------------------------------------------------------------------------
 *
 * pg_notifier.c
 *	  Module entry point: the module magic, _PG_init() and the GUCs.
 *
 * pg_notifier works when loaded on demand (the trigger and the SQL
 * functions); loaded through shared_preload_libraries it also reserves its
 * shared memory (see common/shmem.c) and registers the launcher of its background
 * workers (see launcher.c).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "worker/launcher.h"
#include "pg_notifier.h"
#include "common/database_list.h"
#include "common/denied_networks.h"
#include "common/shmem.h"

PG_MODULE_MAGIC;

int			notifier_max_payload_bytes = NOTIFIER_NOTIFY_LIMIT;
int			notifier_max_coalesce_events = 100000;
char	   *notifier_databases = NULL;
char	   *notifier_role = NULL;
int			notifier_payload_retention = 3600;
char	   *notifier_allowed_hosts = NULL;
char	   *notifier_denied_networks = NULL;
int			notifier_retry_base_ms = 1000;
int			notifier_retry_max_ms = 600000;
int			notifier_retention = 86400;
int			notifier_max_batch_bytes = 64 * 1024 * 1024;
int			notifier_max_webhook_body_bytes = 16 * 1024 * 1024;

void		_PG_init(void);

static bool
check_databases(char **newval, void **extra, GucSource source)
{
	List	   *names;

	if (!parse_database_list(*newval, &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		GUC_check_errhint("Give '*' for every database with the extension, or a comma-separated list of database names; double-quote names with upper case letters or commas.");
		return false;
	}
	if (list_length(names) > NOTIFIER_MAX_DATABASES)
	{
		GUC_check_errdetail("At most %d databases can have a worker.", NOTIFIER_MAX_DATABASES);
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	DefineCustomIntVariable("pg_notifier.max_payload_bytes",
							"Events of this many bytes or more are handled by the on_oversize policy.",
							"NOTIFY refuses payloads of 8000 bytes or more (with the default page size); "
							"a lower value keeps NOTIFY traffic small.",
							&notifier_max_payload_bytes,
							NOTIFIER_NOTIFY_LIMIT,
							NOTIFIER_MIN_PAYLOAD_BYTES,
							NOTIFIER_NOTIFY_LIMIT,
							PGC_USERSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_notifier.max_coalesce_events",
							"Rows whose events a transaction holds for coalescing.",
							"Past it, a change to a row not already held is sent at once, uncoalesced.",
							&notifier_max_coalesce_events,
							100000,
							0,
							INT_MAX / 2,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pg_notifier.databases",
							   "Databases whose pg_notifier worker forwards events.",
							   "'*': every database where the extension is installed; or a "
							   "comma-separated list, each database of which gets a worker.",
							   &notifier_databases,
							   "*",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   check_databases, NULL, NULL);

	DefineCustomStringVariable("pg_notifier.role",
							   "Role the pg_notifier workers run as.",
							   "Empty: the bootstrap superuser.  Needs LOGIN.",
							   &notifier_role,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("pg_notifier.payload_retention",
							"How long oversize events are kept in notifier.payloads.",
							"The worker deletes older rows.",
							&notifier_payload_retention,
							3600,
							1,
							INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pg_notifier.allowed_hosts",
							   "Hosts webhook routes may send to.",
							   "A comma-separated list of host names; empty: any host.",
							   &notifier_allowed_hosts,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pg_notifier.denied_networks",
							   "Networks webhook requests may not connect to.",
							   "A comma-separated list of networks in CIDR notation, checked "
							   "against the address each connection is made to.",
							   &notifier_denied_networks,
							   NOTIFIER_DENIED_NETWORKS_DEFAULT,
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   check_denied_networks, assign_denied_networks, NULL);

	DefineCustomIntVariable("pg_notifier.retry_base_ms",
							"First retry delay ceiling of a failed webhook request.",
							"The ceiling doubles with each attempt; the wait is a random time below it.",
							&notifier_retry_base_ms,
							1000,
							1,
							INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_notifier.retry_max_ms",
							"Longest wait before retrying a webhook request.",
							"Also the most a Retry-After header can make the worker wait.",
							&notifier_retry_max_ms,
							600000,
							1,
							INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_notifier.retention",
							"How long delivered rows stay in notifier.deliveries.",
							"The worker deletes older ones; dead rows are kept.",
							&notifier_retention,
							86400,
							1,
							INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_notifier.max_batch_bytes",
							"Bytes of events the worker writes to the sinks in one batch.",
							"A batch closes before it would pass this size; a larger event goes alone.",
							&notifier_max_batch_bytes,
							64 * 1024 * 1024,
							NOTIFIER_MIN_PAYLOAD_BYTES,
							NOTIFIER_MAX_BATCH_BYTES,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_notifier.max_webhook_body_bytes",
							"Bytes of the body of one webhook request.",
							"A request of a batch_size route carries fewer events rather than a "
							"larger body; a larger event goes alone.",
							&notifier_max_webhook_body_bytes,
							16 * 1024 * 1024,
							NOTIFIER_MIN_PAYLOAD_BYTES,
							NOTIFIER_MAX_BATCH_BYTES,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("pg_notifier");
#else
	EmitWarningsOnPlaceholders("pg_notifier");
#endif

	if (process_shared_preload_libraries_in_progress)
	{
		shmem_request();
		launcher_register();
	}
}
