/*-------------------------------------------------------------------------
 *
 * pg_notifier.c
 *	  Module entry point: the module magic, _PG_init() and the GUCs.
 *
 * pg_notifier works when loaded on demand (the trigger and the SQL
 * functions); loaded through shared_preload_libraries it also reserves its
 * shared memory (see stats.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "pg_notifier.h"
#include "stats.h"

PG_MODULE_MAGIC;

int			notifier_max_payload_bytes = NOTIFIER_NOTIFY_LIMIT;
int			notifier_max_coalesce_events = 100000;

void		_PG_init(void);

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

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("pg_notifier");
#else
	EmitWarningsOnPlaceholders("pg_notifier");
#endif

	if (process_shared_preload_libraries_in_progress)
		stats_request_shmem();
}
