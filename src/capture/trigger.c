/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  notifier.notify_change(): the trigger that turns a change into an
 *	  event.
 *
 * AFTER ... FOR EACH ROW for INSERT, UPDATE and DELETE; AFTER ... FOR EACH
 * STATEMENT for TRUNCATE.  The trigger decides whether a change is worth an
 * event at all (the events option; an UPDATE that changes no watched column
 * is dropped here) and where it goes: counted for a statement-level watch,
 * held for coalescing (coalesce.c) when the table has a key, else emitted
 * at once (emit.c).  For row-level watches a change of key is two changes:
 * DELETE of the old key, INSERT of the new.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "access/xact.h"
#include "fmgr.h"

#include "capture/coalesce.h"
#include "common/stats.h"
#include "capture/watch_cache.h"

static const int op_event_bit[] = {
	[OP_INSERT] = WATCH_INSERT,
	[OP_UPDATE] = WATCH_UPDATE,
	[OP_DELETE] = WATCH_DELETE,
	[OP_TRUNCATE] = WATCH_TRUNCATE,
};

static void
capture(const Watch *w, const ChangeEvent *ev)
{
	if (w->opts.level == LEVEL_STATEMENT)
		coalesce_count(w, ev->op, ev->ts);
	else if (w->opts.dedup && w->nkeys > 0 && ev->op != OP_TRUNCATE)
		coalesce_change(w, ev);
	else
		coalesce_in_order(w, ev);
}

PG_FUNCTION_INFO_V1(notify_change);

Datum
notify_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent tgevent;
	Watch	   *w;
	ChangeEvent ev = {0};

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notifier.notify_change() was not called by the trigger manager"),
				 errhint("Use it in CREATE TRIGGER, or call notifier.watch().")));
	tgevent = trigdata->tg_event;

	/* AFTER ... FOR EACH ROW, except AFTER TRUNCATE ... FOR EACH STATEMENT */
	if (!TRIGGER_FIRED_AFTER(tgevent) ||
		(TRIGGER_FIRED_BY_TRUNCATE(tgevent) && TRIGGER_FIRED_FOR_ROW(tgevent)) ||
		(!TRIGGER_FIRED_BY_TRUNCATE(tgevent) && !TRIGGER_FIRED_FOR_ROW(tgevent)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on table \"%s\" must be AFTER ... FOR EACH ROW, or AFTER TRUNCATE ... FOR EACH STATEMENT",
						trigdata->tg_trigger->tgname,
						RelationGetRelationName(trigdata->tg_relation)),
				 errhint("notifier.watch() creates the right triggers.")));

	w = watch_lookup(trigdata);
	ev.ts = GetCurrentStatementStartTimestamp();

	if (TRIGGER_FIRED_BY_TRUNCATE(tgevent))
		ev.op = OP_TRUNCATE;
	else if (TRIGGER_FIRED_BY_INSERT(tgevent))
	{
		ev.op = OP_INSERT;
		ev.newslot = trigdata->tg_trigslot;
	}
	else if (TRIGGER_FIRED_BY_DELETE(tgevent))
	{
		ev.op = OP_DELETE;
		ev.oldslot = trigdata->tg_trigslot;
	}
	else
	{
		ev.op = OP_UPDATE;
		ev.oldslot = trigdata->tg_trigslot;
		ev.newslot = trigdata->tg_newslot;
	}

	if ((w->opts.events & op_event_bit[ev.op]) == 0)
		return PointerGetDatum(NULL);

	if (ev.oldslot)
		slot_getallattrs(ev.oldslot);
	if (ev.newslot)
		slot_getallattrs(ev.newslot);

	if (ev.op == OP_UPDATE)
	{
		if (w->opts.level == LEVEL_ROW &&
			event_columns_differ(w->keys, w->keys, w->nkeys, ev.oldslot,
								 ev.newslot, NULL))
		{
			ChangeEvent del = {.op = OP_DELETE,.oldslot = ev.oldslot,.ts = ev.ts};
			ChangeEvent ins = {.op = OP_INSERT,.newslot = ev.newslot,.ts = ev.ts};

			capture(w, &del);
			capture(w, &ins);
			return PointerGetDatum(NULL);
		}
		ev.changed = palloc(sizeof(bool) * Max(w->ncolumns, 1));
		if (!event_columns_differ(w->columns, w->columns, w->ncolumns,
								  ev.oldslot, ev.newslot, ev.changed))
		{
			stats_count(COUNT_NOOP_UPDATES);
			return PointerGetDatum(NULL);
		}
	}

	capture(w, &ev);
	return PointerGetDatum(NULL);
}
