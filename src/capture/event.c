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
 * "op" is INSERT, UPDATE, DELETE, TRUNCATE, or READ for a row that a
 * backfill sends as it is (worker/backfill.c): its key and "row" come from
 * the new slot, like an INSERT's.
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
	[OP_READ] = "\"READ\"",
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
 * Do the old and new rows differ in any of the given columns?  oldcols and
 * newcols say how to read each column from each row (they differ only
 * when DDL came between the rows, see event_frame()).  With "changed",
 * mark each column that differs; without, stop at the first.  Values are
 * compared by their binary image, so 1.0 -> 1.00 is a change (to_jsonb()
 * shows it) while rewriting a value to itself is not; a column that only
 * one row has, or whose type changed in between, differs.
 */
bool
event_columns_differ(const WatchColumn *oldcols, const WatchColumn *newcols,
					 int ncols, TupleTableSlot *oldslot,
					 TupleTableSlot *newslot, bool *changed)
{
	bool		any = false;

	for (int i = 0; i < ncols; i++)
	{
		int			oldoff = oldcols[i].attnum - 1;
		int			newoff = newcols[i].attnum - 1;
		bool		differ;

		if (oldoff < 0 || newoff < 0 || oldcols[i].typid != newcols[i].typid)
			differ = oldoff >= 0 || newoff >= 0 ||
				oldcols[i].typid != newcols[i].typid;
		else if (oldslot->tts_isnull[oldoff] || newslot->tts_isnull[newoff])
			differ = oldslot->tts_isnull[oldoff] != newslot->tts_isnull[newoff];
		else
			differ = !datum_image_eq(oldslot->tts_values[oldoff],
									 newslot->tts_values[newoff],
									 newcols[i].typbyval, newcols[i].typlen);
		if (changed != NULL)
			changed[i] = differ;
		else if (differ)
			return true;
		any |= differ;
	}
	return any;
}

/*
 * "name":value,... for the given columns (names from cols, values read
 * from the slot as "read" says; NULL: as cols says), or only those marked
 * in "only" when it is not NULL.  A column the row's version does not have
 * is left out.
 */
static void
append_columns(StringInfo buf, const WatchColumn *cols,
			   const WatchColumn *read, int ncols,
			   TupleTableSlot *slot, const bool *only)
{
	bool		first = true;

	if (read == NULL)
		read = cols;
	for (int i = 0; i < ncols; i++)
	{
		const WatchColumn *col = &read[i];

		if ((only != NULL && !only[i]) || col->attnum == InvalidAttrNumber)
			continue;
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		appendStringInfoString(buf, cols[i].json_name);
		appendStringInfoChar(buf, ':');
		json_append_value(buf, slot->tts_values[col->attnum - 1],
						  slot->tts_isnull[col->attnum - 1], col->type);
	}
}

static void
append_object(StringInfo buf, const char *name, const Watch *w,
			  TupleTableSlot *slot, const WatchColumn *read, const bool *only)
{
	appendStringInfo(buf, ",\"%s\":{", name);
	append_columns(buf, w->columns, read, w->ncolumns, slot, only);
	appendStringInfoChar(buf, '}');
}

/* does the table version have column attnum, not dropped? */
static bool
version_has_column(const Watch *version, AttrNumber attnum)
{
	return attnum <= version->tupdesc->natts &&
		!TupleDescAttr(version->tupdesc, attnum - 1)->attisdropped;
}

/* the column attnum as the version reads it; NULL if it does not send it */
static const WatchColumn *
version_column(const WatchColumn *cols, int ncols, AttrNumber attnum)
{
	for (int i = 0; i < ncols; i++)
		if (cols[i].attnum == attnum)
			return &cols[i];
	return NULL;
}

/* how to read cols (of the frame) from a row of the given version */
static WatchColumn *
columns_in_version(const WatchColumn *cols, int ncols, const Watch *version)
{
	WatchColumn *read = palloc0(sizeof(WatchColumn) * Max(ncols, 1));

	for (int i = 0; i < ncols; i++)
	{
		const WatchColumn *c = version_column(version->keys, version->nkeys,
											  cols[i].attnum);

		if (c == NULL)
			c = version_column(version->columns, version->ncolumns,
							   cols[i].attnum);
		if (c != NULL)
			read[i] = *c;		/* else attnum 0: left out */
	}
	return read;
}

/*
 * The rows of a held change were formed with other versions of the table
 * than the frame w (the Watch of the change's last event): DDL came in
 * between.  The event is that of the frame -- its names, its columns, its
 * key -- with each row read with its own version, columns matched by
 * attribute number:
 *
 *	- a column that a row's version has but does not send (excluded, or
 *	  not in "columns" then) is left out of the whole event;
 *	- a column that a row's version does not have (added since, dropped
 *	  before) is left out of that row's object only, and counts as changed;
 *	- a column whose type changed counts as changed, each value shown as
 *	  its own type shows it.
 *
 * Returns the frame to build the event with (a copy in the current memory
 * context) and sets ev's reading instructions.
 */
const Watch *
event_frame(const Watch *w, const Watch *oldversion,
			const Watch *newversion, ChangeEvent *ev)
{
	Watch	   *f = palloc(sizeof(Watch));
	WatchColumn *cols = palloc0(sizeof(WatchColumn) * Max(w->ncolumns, 1));
	const Watch *versions[2] = {oldversion, newversion};

	*f = *w;
	f->ncolumns = 0;
	for (int i = 0; i < w->ncolumns; i++)
	{
		AttrNumber	attnum = w->columns[i].attnum;
		bool		hidden = false;

		for (int v = 0; v < 2; v++)
			if (versions[v] != NULL && version_has_column(versions[v], attnum) &&
				version_column(versions[v]->columns, versions[v]->ncolumns,
							   attnum) == NULL)
				hidden = true;
		if (!hidden)
			cols[f->ncolumns++] = w->columns[i];
	}
	f->columns = cols;

	if (oldversion != NULL)
	{
		ev->oldcols = columns_in_version(f->columns, f->ncolumns, oldversion);
		ev->oldkeys = columns_in_version(f->keys, f->nkeys, oldversion);
	}
	if (newversion != NULL)
	{
		ev->newcols = columns_in_version(f->columns, f->ncolumns, newversion);
		ev->newkeys = columns_in_version(f->keys, f->nkeys, newversion);
	}
	return f;
}

/*
 * ,"key":{...} -- from the new row, or the old one for a DELETE.  Nothing
 * for a table without a key, or for TRUNCATE.
 */
void
event_append_key(StringInfo buf, const Watch *w, const ChangeEvent *ev)
{
	bool		old = ev->op == OP_DELETE;

	if (w->nkeys == 0 || ev->op == OP_TRUNCATE)
		return;
	appendBinaryStringInfo(buf, ",\"key\":{", 8);
	append_columns(buf, w->keys, old ? ev->oldkeys : ev->newkeys, w->nkeys,
				   old ? ev->oldslot : ev->newslot, NULL);
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
		if (ev->op == OP_DELETE)
			append_object(buf, "row", w, ev->oldslot, ev->oldcols, NULL);
		else
			append_object(buf, "row", w, ev->newslot, ev->newcols, NULL);
		return;
	}

	if (mode == PAYLOAD_DIFF)
	{
		bool		first = true;

		append_object(buf, "row", w, ev->newslot, ev->newcols, ev->changed);
		append_object(buf, "old", w, ev->oldslot, ev->oldcols, ev->changed);
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

	append_object(buf, "row", w, ev->newslot, ev->newcols, NULL);
	if (mode == PAYLOAD_FULL)
		append_object(buf, "old", w, ev->oldslot, ev->oldcols, NULL);
}

/*
 * The whole event of ev into buf: envelope, key, body and the closing
 * brace.  envelope_len and key_len (if not NULL) get the length of the
 * envelope and of the envelope with the key, where an oversize event is
 * cut back to (emit.c).
 */
void
event_build(StringInfo buf, const Watch *w, const ChangeEvent *ev,
			int *envelope_len, int *key_len)
{
	event_append_envelope(buf, w, ev->op, ev->ts);
	if (envelope_len != NULL)
		*envelope_len = buf->len;
	event_append_key(buf, w, ev);
	if (key_len != NULL)
		*key_len = buf->len;
	event_append_body(buf, w, ev);
	appendStringInfoChar(buf, '}');
}
