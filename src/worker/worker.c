/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The worker of one database: listens to the channels of its routes,
 *	  forwards what arrives, and prunes notifier.payloads.
 *
 * Started by the launcher (launcher.c), connected to its database as
 * pg_notifier.role.  Its life:
 *
 *	- It always listens to the control channel.  Without the extension it
 *	  exits when pg_notifier.databases is '*' (the launcher starts it again
 *	  when CREATE EXTENSION commits), and waits in a listed database:
 *	  CREATE EXTENSION notifies the control channel.  DROP EXTENSION (any
 *	  extension's) wakes it through shared memory to look at once; the
 *	  extension is also looked up every CHECK_SECONDS (a catalog lookup,
 *	  not a query).  A worker transaction that finds the extension gone or
 *	  created again (worker_xact.c) touches none of its tables and makes
 *	  the worker look at once.
 *	- With the extension it loads notifier.routes and listens to their
 *	  channels.  A change of routes notifies the control channel: the
 *	  routes are loaded again and the channels listened to adjusted.
 *	- When notifications arrive (its latch is set and notifyInterruptPending
 *	  is true) it collects all of them at once, then forwards them in
 *	  transactions of at most FORWARD_BATCH events.  Between those it
 *	  collects again, so reading the NOTIFY queue does not wait for the
 *	  sinks (up to MAX_AHEAD_BYTES of events held in memory per inbox; the
 *	  rest in a temporary file, listen.c).
 *	- Committed outbox events (delivery => 'outbox') set its latch and a
 *	  flag in shared memory; it then moves them to their routes
 *	  (outbox_relay.c).  It also looks at the outbox when it starts, when
 *	  the routes change and every CHECK_SECONDS.
 *	- Remote deliveries (webhooks: sinks/remote_delivery.c, the engine) run
 *	  in the same loop: it waits on its latch and the sinks' sockets
 *	  together.
 *	- Backfills (backfill.c) run in the same loop, one batch per turn.
 *	- When idle it sleeps on its latch and runs no query: pruning
 *	  notifier.payloads and delivered rows happens only when rows may be
 *	  there to prune.
 *
 * A forwarding transaction (notifications or the outbox) that fails is
 * rolled back and tried again after a backoff (forward.c), keeping its
 * events: the worker goes on with the rest of its loop meanwhile.  Other
 * errors are not caught: the worker exits, the launcher starts it again
 * (let it crash).  SIGTERM ends it between two
 * transactions, or at once inside one; SIGHUP rereads the configuration.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker/sinks/remote_delivery.h"
#include "common/database_list.h"
#include "common/extension.h"
#include "worker/backfill.h"
#include "worker/forward.h"
#include "worker/listen.h"
#include "worker/outbox_relay.h"
#include "pg_notifier.h"
#include "worker/prune.h"
#include "worker/routes.h"
#include "worker/route_health.h"
#include "common/stats.h"
#include "common/worker_registry.h"
#include "common/worker_wake.h"
#include "worker/worker_xact.h"

/* seconds between checks that the extension is still there */
#define CHECK_SECONDS 10
/* events forwarded per transaction */
#define FORWARD_BATCH 10000
/*
 * Bytes of events collected into one inbox (one is forwarded while the other
 * fills); past it they wait in the NOTIFY queue.  256 MB by default.
 */
#define MAX_AHEAD_BYTES ((Size) notifier_max_batch_bytes * 4)

PGDLLEXPORT void notifier_worker_main(Datum main_arg);

static char dbname[NAMEDATALEN];
static char *role_at_start;
static Oid	extension_oid = InvalidOid; /* InvalidOid: waiting for it */
static RouteTable *routes = NULL;
static bool routes_changed = true;
static TimestampTz next_check = 0;
static bool waiting_logged = false;
static bool old_version_logged = false;
static bool outbox_due = true;	/* look at the outbox even if not woken */
static int	drain_current = 0;	/* the inbox being forwarded */
static Backoff drain_backoff;	/* a failed notification batch, to retry */
static Backoff relay_backoff;	/* a failed outbox batch, to retry */

/*
 * Pruning a table: only when there may be rows to delete, that is when
 * rows were added since the last prune (a counter moved), or the oldest
 * row left has expired.
 */
typedef struct Prune
{
	const char *table;
	const char *time_column;
	const char *condition;
	int		   *retention_secs;
	uint64		seen;			/* the counter at the last prune */
	TimestampTz oldest;			/* of the rows left; 0: none */
} Prune;

static Prune payloads_prune = {
	"payloads", "created_at", "true", &notifier_payload_retention, PG_UINT64_MAX, 0
};
static Prune deliveries_prune = {
	"deliveries", "updated_at", "status OPERATOR(pg_catalog.=) 'delivered'", &notifier_retention, PG_UINT64_MAX, 0
};

/*
 * SIGTERM: outside a transaction the worker exits quietly at the top of its
 * loop; inside one (a long write, a lock wait) it is interrupted at once.
 */
static void
worker_sigterm(SIGNAL_ARGS)
{
	if (IsTransactionOrTransactionBlock())
		die(postgres_signal_arg);
	else
		SignalHandlerForShutdownRequest(postgres_signal_arg);
}

/*
 * Listen to the channels of new_routes that old_routes does not have, stop
 * listening to those it lost.  In a transaction; effective at commit.
 */
static void
adjust_listening(RouteTable *old_routes, RouteTable *new_routes)
{
	List	   *old_channels = old_routes ? old_routes->listened : NIL;
	List	   *new_channels = new_routes ? new_routes->listened : NIL;
	ListCell   *lc;

	foreach(lc, old_channels)
	{
		if (!routes_listened(new_routes, lfirst(lc)))
			unlisten_channel(lfirst(lc));
	}
	foreach(lc, new_channels)
	{
		if (!routes_listened(old_routes, lfirst(lc)))
			listen_channel(lfirst(lc));
	}
}

/*
 * Is the extension there, and are the routes current?  Loads them again
 * when they changed, or when the extension was (re)created or dropped.
 */
static void
refresh(void)
{
	RouteTable *new_routes = NULL;
	Oid			ext;

	(void) worker_xact_begin();
	ext = worker_xact_extension();
	if (OidIsValid(ext) && !notifier_extension_current(ext))
	{
		/* the library is newer than the extension's objects: wait for UPDATE */
		if (!old_version_logged)
			ereport(LOG,
					(errmsg("extension \"pg_notifier\" in database \"%s\" is not at version %s",
							dbname, PG_NOTIFIER_VERSION),
					 errdetail("The worker starts once the extension is updated."),
					 errhint("ALTER EXTENSION pg_notifier UPDATE;")));
		old_version_logged = true;
		ext = InvalidOid;
	}
	else
		old_version_logged = false;
	if (ext == extension_oid && !routes_changed)
	{
		worker_xact_commit();
		worker_xact_expect_extension(ext);
		return;
	}
	if (!OidIsValid(ext) && databases_all(notifier_databases))
	{
		/* '*': no worker stays where there is no extension (launcher.c) */
		worker_xact_commit();
		registry_set_state(WORKER_NO_EXTENSION);
		proc_exit(0);
	}

	if (OidIsValid(ext))
		new_routes = routes_load(TopMemoryContext);
	else if (!waiting_logged)
		ereport(LOG,
				(errmsg("extension \"pg_notifier\" is not installed in database \"%s\"",
						dbname),
				 errdetail("The worker waits for CREATE EXTENSION pg_notifier.")));
	waiting_logged = !OidIsValid(ext);
	adjust_listening(routes, new_routes);
	worker_xact_commit();
	worker_xact_expect_extension(ext);

	routes_free(routes);
	routes = new_routes;
	route_health_forget();
	routes_changed = false;
	/* events may have waited in the outbox for one of the new routes */
	outbox_relay_reset();
	outbox_due = true;
	if (OidIsValid(ext) && ext != extension_oid)
	{
		/* prune once; resume the deliveries a stop interrupted */
		payloads_prune.seen = deliveries_prune.seen = PG_UINT64_MAX;
		delivery_resume();
	}
	else if (!OidIsValid(ext) && OidIsValid(extension_oid))
		delivery_stop();
	delivery_all_pending();
	extension_oid = ext;

	if (routes != NULL)
	{
		int64	   *ids = palloc(Max(routes->nroutes, 1) * sizeof(int64));

		for (int i = 0; i < routes->nroutes; i++)
			ids[i] = routes->routes[i].id;
		stats_routes_retain(MyDatabaseId, ids, routes->nroutes);
		pfree(ids);
	}
	/* a backfill may have been started (control channel) or be due */
	backfill_wake();
	registry_set_channels(routes ? routes->channels : NIL);
	registry_set_state(OidIsValid(ext) ? WORKER_LISTENING : WORKER_WAITING);
}

/*
 * Forward inbox items [start, start + n): control messages among them
 * reload the routes first.  Returns false when the transaction failed and
 * must be tried again after backoff.
 */
static bool
forward_chunk(Inbox *inbox, int start, int n)
{
	InboxItem  *events = palloc(n * sizeof(InboxItem));
	int			nevents = 0;
	bool		control = false;
	bool		done = true;

	for (int i = start; i < start + n; i++)
	{
		if (strcmp(inbox->items[i].channel, NOTIFIER_CONTROL_CHANNEL) == 0)
			control = true;
	}
	if (control)
	{
		MemoryContext old = CurrentMemoryContext;

		routes_changed = true;
		refresh();
		MemoryContextSwitchTo(old);
	}
	for (int i = start; i < start + n; i++)
	{
		/*
		 * Not: the NOTIFY of an outbox event, sent by this worker; a channel
		 * whose events come from the outbox (routes.c).
		 */
		if (inbox->items[i].src_pid != MyProcPid &&
			routes_listened(routes, inbox->items[i].channel))
			events[nevents++] = inbox->items[i];
	}
	if (nevents > 0 && routes != NULL)
	{
		registry_set_state(WORKER_FORWARDING);
		pgstat_report_activity(STATE_RUNNING, "forwarding events");
		done = forward_events(routes, events, nevents, inbox->received_at,
							  &drain_backoff);
	}
	pfree(events);
	return done;
}

/* collect into inbox, noting when its first item came */
static void
collect(Inbox *inbox)
{
	bool		empty = !listen_pending(inbox);

	listen_collect(inbox, MAX_AHEAD_BYTES);
	if (empty && listen_pending(inbox))
		inbox->received_at = GetCurrentTimestamp();
}

/* has the drain work to do now? */
static bool
drain_due(Inbox *inboxes, TimestampTz now)
{
	return (notifyInterruptPending || listen_pending(&inboxes[drain_current])) &&
		!backoff_waiting(&drain_backoff, now);
}

/*
 * Collect what arrived and forward it, FORWARD_BATCH events per
 * transaction.  Between transactions, what arrived meanwhile is collected
 * into the other inbox (MAX_AHEAD_BYTES in memory, the rest in its spill
 * file), so that the NOTIFY queue keeps being read while the sinks are
 * written.
 *
 * When a transaction fails (a transient error: a lock timeout...), the
 * drain stops where it is and keeps its items; the worker goes on with the
 * outbox and the webhooks, and comes back once the backoff has passed.
 * Meanwhile new notifications wait in the NOTIFY queue.
 */
static void
drain(Inbox *inboxes)
{
	Inbox	   *current = &inboxes[drain_current];
	Inbox	   *next = &inboxes[1 - drain_current];

	if (!listen_pending(current))
		collect(current);
	while (listen_pending(current))
	{
		while (current->done < current->nitems)
		{
			int			n = Min(FORWARD_BATCH, current->nitems - current->done);

			CHECK_FOR_INTERRUPTS();
			if (ShutdownRequestPending)
				return;
			if (!forward_chunk(current, current->done, n))
				goto out;
			current->done += n;
			if (notifyInterruptPending)
				collect(next);
		}
		if (listen_unspill(current, MAX_AHEAD_BYTES))
			continue;

		/* current is done: it becomes the empty one */
		listen_reset(current);
		drain_current = 1 - drain_current;
		current = next;
		next = &inboxes[1 - drain_current];
		if (notifyInterruptPending)
			collect(current);
	}
out:
	if (routes != NULL)
		registry_set_state(WORKER_LISTENING);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Move the events of the outbox to their routes (outbox_relay.c). */
static void
relay_outbox(void)
{
	if (routes == NULL)
		return;
	registry_set_state(WORKER_FORWARDING);
	pgstat_report_activity(STATE_RUNNING, "moving outbox events");
	outbox_relay(routes, &relay_backoff);
	registry_set_state(WORKER_LISTENING);
	pgstat_report_activity(STATE_IDLE, NULL);
	outbox_vacuum();
}

static void
maybe_prune(Prune *prune, uint64 counter, TimestampTz now)
{
	bool		expired;

	expired = prune->oldest != 0 &&
		now >= TimestampTzPlusMilliseconds(prune->oldest,
										   (int64) *prune->retention_secs * 1000);

	if (!OidIsValid(extension_oid) || (counter == prune->seen && !expired))
		return;
	prune->seen = counter;
	pgstat_report_activity(STATE_RUNNING, "pruning");
	prune->oldest = prune_table(prune->table, prune->time_column, prune->condition,
								*prune->retention_secs);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* When the worker dies on an error, status() shows why. */
static void
record_error(void)
{
	MemoryContext old = MemoryContextSwitchTo(ErrorContext);
	ErrorData  *edata = CopyErrorData();

	registry_set_error(edata->message);
	MemoryContextSwitchTo(old);
}

static void
worker_loop(void)
{
	Inbox		inboxes[2];
	TimestampTz next_stats = 0;
	MemoryContext loop_cxt;

	memset(inboxes, 0, sizeof(inboxes));
	for (int i = 0; i < 2; i++)
		inboxes[i].cxt = AllocSetContextCreate(TopMemoryContext,
											   "pg_notifier inbox",
											   ALLOCSET_DEFAULT_SIZES);
	/* what one turn of the loop allocates, freed at the next */
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "pg_notifier worker loop",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now;
		TimestampTz next_delivery;
		TimestampTz wake_at;

		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			proc_exit(0);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (strcmp(role_at_start, notifier_role) != 0)
			{
				ereport(LOG,
						(errmsg("pg_notifier worker of database \"%s\" restarting",
								dbname),
						 errdetail("pg_notifier.role changed.")));
				proc_exit(1);
			}
			/* the retentions may have changed: look at the rows left again */
			if (payloads_prune.oldest != 0)
				payloads_prune.oldest = 1;
			if (deliveries_prune.oldest != 0)
				deliveries_prune.oldest = 1;
		}

		if (worker_wake_take(WAKE_EXTENSION))
			next_check = 0;		/* an extension was dropped: ours? */
		now = GetCurrentTimestamp();
		if (drain_due(inboxes, now))
			drain(inboxes);
		if (worker_wake_take(WAKE_OUTBOX))
			outbox_due = true;
		if (outbox_due && !backoff_waiting(&relay_backoff, now))
		{
			outbox_due = false;
			relay_outbox();
			/* a failed batch: again once the backoff has passed */
			if (relay_backoff.until != 0)
				outbox_due = true;
		}
		next_delivery = delivery_work(routes);

		/* one batch of a backfill, if one is due (backfill.c) */
		if (OidIsValid(extension_oid))
			backfill_step();

		/* a transaction found the extension dropped or created again */
		if (worker_xact_extension_changed())
			next_check = 0;

		now = GetCurrentTimestamp();
		if (now >= next_check)
		{
			/*
			 * And a look at the whole outbox: a COMMIT PREPARED wakes nobody,
			 * and ids may have started over (the sequence was reset).
			 */
			outbox_relay_reset();
			outbox_due = true;
			routes_changed = true;	/* and at the watches: a trigger made by
									 * hand */
			refresh();
			maybe_prune(&payloads_prune, stats_read(COUNT_OVERSIZE_REFERENCED), now);
			maybe_prune(&deliveries_prune, delivery_delivered_count(), now);
			next_check = TimestampTzPlusMilliseconds(now, CHECK_SECONDS * 1000);
		}

		if (drain_due(inboxes, now))
			continue;

		/*
		 * What the transactions did, for autovacuum, before sleeping (the
		 * commits report it too, but at most once a second).
		 */
		if (now >= next_stats)
		{
			pgstat_report_stat(true);
			next_stats = TimestampTzPlusMilliseconds(now, 1000);
		}
		wake_at = next_check;
		if (next_delivery != 0 && next_delivery < wake_at)
			wake_at = next_delivery;
		if (drain_backoff.until != 0 && drain_backoff.until < wake_at)
			wake_at = drain_backoff.until;
		if (relay_backoff.until != 0 && relay_backoff.until < wake_at)
			wake_at = relay_backoff.until;
		if (OidIsValid(extension_oid) && backfill_next_at() < wake_at)
			wake_at = backfill_next_at();
		delivery_wait(TimestampDifferenceMilliseconds(now, wake_at));
	}
}

/* Every message of the worker says which one it is, whatever log_line_prefix. */
static void
worker_error_context(void *arg)
{
	errcontext("pg_notifier worker of database \"%s\"", dbname);
}

void
notifier_worker_main(Datum main_arg)
{
	int			slotno;
	ErrorContextCallback errcallback;

	memcpy(dbname, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	dbname[NAMEDATALEN - 1] = '\0';

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	BackgroundWorkerUnblockSignals();
	errcallback.callback = worker_error_context;
	errcallback.arg = NULL;
	errcallback.previous = NULL;
	error_context_stack = &errcallback;

	slotno = registry_attach(dbname);
	role_at_start = MemoryContextStrdup(TopMemoryContext, notifier_role);
	BackgroundWorkerInitializeConnection(dbname,
										 role_at_start[0] != '\0' ? role_at_start : NULL,
										 0);
	pgstat_report_appname("pg_notifier worker");
	pgstat_report_activity(STATE_IDLE, NULL);
	worker_wake_arm(slotno);

	/* the control channel, whether or not the extension is there */
	StartTransactionCommand();
	worker_xact_pin_settings();
	listen_channel(NOTIFIER_CONTROL_CHANNEL);
	CommitTransactionCommand();

	PG_TRY();
	{
		worker_loop();
	}
	PG_CATCH();
	{
		record_error();
		PG_RE_THROW();
	}
	PG_END_TRY();
}
