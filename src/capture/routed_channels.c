/*-------------------------------------------------------------------------
 *
 * routed_channels.c
 *	  Does a channel have a route?  delivery => 'auto' writes an event to
 *	  the outbox only when it does, and asks for every event: the answer
 *	  comes from a per-backend set of the channels of notifier.routes, not
 *	  from a query.
 *
 * The set is read once, straight from the heap of notifier.routes (the
 * writing role needs no privilege on it), with the latest snapshot, and
 * kept until a relcache invalidation of notifier.routes says it changed:
 * every change of routes sends one at commit (the routes_changed trigger,
 * api/routes_api.c), which a backend takes in when its next transaction
 * starts or it next locks a table.  So the events of a transaction that
 * starts after a route was committed go to the outbox; a transaction that
 * was already running may take the route in at its next lock.
 *
 * An invalidation that arrives while the set is read (locking the table
 * takes invalidations in) makes it read again.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "capture/routed_channels.h"
#include "common/extension.h"

static MemoryContext routed_cxt = NULL; /* the set; reset at each read */
static HTAB *routed = NULL;		/* channel names (NAMEDATALEN keys) */
static bool routed_valid = false;
static uint64 invalidations = 0;	/* of notifier.routes, counted */
static Oid	routes_relid = InvalidOid;
static bool callback_registered = false;

static void
routes_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == routes_relid)
	{
		routed_valid = false;
		invalidations++;
	}
}

/* Read the channels of notifier.routes into a new set. */
static void
read_routed(void)
{
	Relation	rel;
	AttrNumber	attnum;
	Snapshot	snapshot;
	TableScanDesc scan;
	HeapTuple	tuple;
	HASHCTL		ctl;

	MemoryContextReset(routed_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = NAMEDATALEN;
	ctl.hcxt = routed_cxt;
	routed = hash_create("pg_notifier routed channels", 16, &ctl,
						 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	routes_relid = notifier_table_oid("routes");
	rel = table_open(routes_relid, AccessShareLock);
	attnum = attnameAttNum(rel, "channel", false);
	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table notifier.routes has no column \"channel\""),
				 errhint(NOTIFIER_REINSTALL_HINT)));
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, attnum, RelationGetDescr(rel), &isnull);
		char	   *channel;

		if (isnull)
			continue;
		channel = TextDatumGetCString(d);
		/* no NOTIFY has a longer channel: such a route receives nothing */
		if (strlen(channel) < NAMEDATALEN)
			(void) hash_search(routed, channel, HASH_ENTER, NULL);
		pfree(channel);
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
}

/*
 * Has channel a route?  In a transaction of a backend where the extension
 * is installed (a notify_change trigger fires).
 */
bool
channel_is_routed(const char *channel)
{
	if (!callback_registered)
	{
		routed_cxt = AllocSetContextCreate(CacheMemoryContext,
										   "pg_notifier routed channels",
										   ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(routes_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	while (!routed_valid)
	{
		uint64		before = invalidations;

		read_routed();
		routed_valid = (invalidations == before);
	}
	if (strlen(channel) >= NAMEDATALEN)
		return false;
	return hash_search(routed, channel, HASH_FIND, NULL) != NULL;
}
