/*-------------------------------------------------------------------------
 *
 * event.c
 *	  Building the JSON event of one change.
 *
 * An event is compact JSON with its keys in a fixed order:
 *
 *	{"id":"<fxid>.<seq>","op":"UPDATE","schema":"public","table":"orders",
 *	 "xid":"<fxid>","ts":"2026-11-21T19:10:38.812345+00:00",
 *	 "key":{...},"row":{...},"old":{...},"changed":[...]}
 *
 * It is written in three parts -- envelope, key, body -- so that the
 * emitter can cut an oversize event back to its envelope and key.
 *
 * "id" is the top-level full transaction id and a sequence number counted
 * per transaction from 1, in the order events are sent; it is unique for
 * the life of the cluster.  "ts" is the start of the statement that made
 * the change (for a coalesced event: the last change), in UTC.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/timestamp.h"

#include "capture/event.h"

static const char *const op_json[] = {
	[OP_INSERT] = "\"INSERT\"",
	[OP_UPDATE] = "\"UPDATE\"",
	[OP_DELETE] = "\"DELETE\"",
	[OP_TRUNCATE] = "\"TRUNCATE\"",
};

/* the transaction the sequence counts in, and the last number given */
static uint64 sequence_fxid = 0;
static uint32 sequence_last = 0;

/*
 * What does not change from event to event, formatted once: the parts of
 * the envelope around the sequence number for sequence_fxid, and the last
 * timestamp (all events of a statement share theirs).
 */
static char id_prefix[32];		/* {"id":"<fxid>. */
static char xid_part[48];		/* ,"xid":"<fxid>","ts": */
static TimestampTz formatted_ts = DT_NOBEGIN;
static char formatted_ts_text[40];	/* "YYYY-MM-DDTHH:MM:SS.ffffff+00:00" */

/*
 * The timestamp as "YYYY-MM-DDTHH:MM:SS.ffffff+00:00".
 */
static const char *
utc_timestamp(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (ts == formatted_ts)
		return formatted_ts_text;
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	snprintf(formatted_ts_text, sizeof(formatted_ts_text),
			 "\"%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00\"",
			 tm.tm_year, tm.tm_mon, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
	formatted_ts = ts;
	return formatted_ts_text;
}

/*
 * {"id":...,"op":...,"schema":...,"table":...,"xid":...,"ts":...
 * (no closing brace)
 */
void
event_append_envelope(StringInfo buf, const Watch *w, ChangeOp op,
					  TimestampTz ts)
{
	uint64		fxid = U64FromFullTransactionId(GetTopFullTransactionId());
	char		seq[12];

	if (fxid != sequence_fxid)
	{
		sequence_fxid = fxid;
		sequence_last = 0;
		snprintf(id_prefix, sizeof(id_prefix), "{\"id\":\"" UINT64_FORMAT ".", fxid);
		snprintf(xid_part, sizeof(xid_part), ",\"xid\":\"" UINT64_FORMAT "\",\"ts\":", fxid);
	}
	sequence_last++;
	snprintf(seq, sizeof(seq), "%u", sequence_last);

	appendStringInfoString(buf, id_prefix);
	appendStringInfoString(buf, seq);
	appendStringInfoString(buf, "\",\"op\":");
	appendStringInfoString(buf, op_json[op]);
	appendStringInfoString(buf, ",\"schema\":");
	appendStringInfoString(buf, w->json_schema);
	appendStringInfoString(buf, ",\"table\":");
	appendStringInfoString(buf, w->json_table);
	appendStringInfoString(buf, xid_part);
	appendStringInfoString(buf, utc_timestamp(ts));
}

/*
 * Do the old and new rows differ in any of the given columns?  With
 * "changed", mark each column that differs; without, stop at the first.
 * Values are compared by their binary image, so 1.0 -> 1.00 is a change
 * (to_jsonb() shows it) while rewriting a value to itself is not.
 */
bool
event_columns_differ(const WatchColumn *cols, int ncols,
					 TupleTableSlot *oldslot, TupleTableSlot *newslot,
					 bool *changed)
{
	bool		any = false;

	for (int i = 0; i < ncols; i++)
	{
		int			off = cols[i].attnum - 1;
		bool		differ;

		if (oldslot->tts_isnull[off] || newslot->tts_isnull[off])
			differ = oldslot->tts_isnull[off] != newslot->tts_isnull[off];
		else
			differ = !datum_image_eq(oldslot->tts_values[off],
									 newslot->tts_values[off],
									 cols[i].typbyval, cols[i].typlen);
		if (changed != NULL)
			changed[i] = differ;
		else if (differ)
			return true;
		any |= differ;
	}
	return any;
}

/*
 * "name":value,... for the given columns of a slot, or only those marked in
 * "only" when it is not NULL.
 */
static void
append_columns(StringInfo buf, const WatchColumn *cols, int ncols,
			   TupleTableSlot *slot, const bool *only)
{
	bool		first = true;

	for (int i = 0; i < ncols; i++)
	{
		const WatchColumn *col = &cols[i];

		if (only != NULL && !only[i])
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		appendStringInfoString(buf, col->json_name);
		appendStringInfoChar(buf, ':');
		json_append_value(buf, slot->tts_values[col->attnum - 1],
						  slot->tts_isnull[col->attnum - 1], col->type);
	}
}

static void
append_object(StringInfo buf, const char *name, const Watch *w,
			  TupleTableSlot *slot, const bool *only)
{
	appendStringInfo(buf, ",\"%s\":{", name);
	append_columns(buf, w->columns, w->ncolumns, slot, only);
	appendStringInfoChar(buf, '}');
}

/*
 * ,"key":{...} -- from the new row, or the old one for a DELETE.  Nothing
 * for a table without a key, or for TRUNCATE.
 */
void
event_append_key(StringInfo buf, const Watch *w, const ChangeEvent *ev)
{
	TupleTableSlot *slot = ev->op == OP_DELETE ? ev->oldslot : ev->newslot;

	if (w->nkeys == 0 || ev->op == OP_TRUNCATE)
		return;
	appendBinaryStringInfo(buf, ",\"key\":{", 8);
	append_columns(buf, w->keys, w->nkeys, slot, NULL);
	appendStringInfoChar(buf, '}');
}

/*
 * ,"row":{...},"old":{...},"changed":[...] as the payload mode asks.
 */
void
event_append_body(StringInfo buf, const Watch *w, const ChangeEvent *ev)
{
	PayloadMode mode = w->opts.payload;

	/* payload=keys: the key is the whole story, unless there is none */
	if (ev->op == OP_TRUNCATE || (mode == PAYLOAD_KEYS && w->nkeys > 0))
		return;

	if (ev->op != OP_UPDATE)
	{
		append_object(buf, "row", w,
					  ev->op == OP_DELETE ? ev->oldslot : ev->newslot, NULL);
		return;
	}

	if (mode == PAYLOAD_DIFF)
	{
		bool		first = true;

		append_object(buf, "row", w, ev->newslot, ev->changed);
		append_object(buf, "old", w, ev->oldslot, ev->changed);
		appendBinaryStringInfo(buf, ",\"changed\":[", 12);
		for (int i = 0; i < w->ncolumns; i++)
		{
			if (!ev->changed[i])
				continue;
			if (!first)
				appendStringInfoChar(buf, ',');
			first = false;
			appendStringInfoString(buf, w->columns[i].json_name);
		}
		appendStringInfoChar(buf, ']');
		return;
	}

	append_object(buf, "row", w, ev->newslot, NULL);
	if (mode == PAYLOAD_FULL)
		append_object(buf, "old", w, ev->oldslot, NULL);
}
