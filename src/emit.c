/*-------------------------------------------------------------------------
 *
 * emit.c
 *	  Sending one event with NOTIFY, after the size check.
 *
 * NOTIFY refuses a payload of NOTIFIER_NOTIFY_LIMIT bytes or more; an event
 * that long (or as long as pg_notifier.max_payload_bytes) goes by the
 * watch's on_oversize policy instead, so that error can never be raised:
 *
 *	reference	store the event in notifier.payloads, send the envelope and
 *				key with "ref":<id>,"truncated":true (without the key if
 *				even that is too long)
 *	keys		send the envelope and key with "truncated":true; if that is
 *				too long, as reference
 *	error		fail the statement, naming table, size and limit
 *	skip		send nothing; WARNING and a counter
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"
#include "utils/builtins.h"

#include "emit.h"
#include "payloads.h"
#include "pg_notifier.h"
#include "stats.h"

/* longest ,"ref":<int64>,"truncated":true} */
#define REF_TAIL_MAX 48

static void
send_event(const Watch *w, const char *payload)
{
	Async_Notify(w->opts.channel, payload);
	stats_count(COUNT_EVENTS_SENT);
}

/* cut buf back to len bytes */
static void
truncate_to(StringInfo buf, int len)
{
	buf->len = len;
	buf->data[len] = '\0';
}

void
emit_event(const Watch *w, const ChangeEvent *ev)
{
	int			limit = Min(notifier_max_payload_bytes, NOTIFIER_NOTIFY_LIMIT);
	StringInfoData buf;
	int			envelope_len;
	int			key_len;
	int64		ref;

	initStringInfo(&buf);
	event_append_envelope(&buf, w, ev->op, ev->ts);
	envelope_len = buf.len;
	event_append_key(&buf, w, ev);
	key_len = buf.len;
	event_append_body(&buf, w, ev);
	appendStringInfoChar(&buf, '}');

	if (buf.len < limit)
	{
		send_event(w, buf.data);
		pfree(buf.data);
		return;
	}

	switch (w->opts.on_oversize)
	{
		case OVERSIZE_SKIP:
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("pg_notifier skipped an event of %d bytes on channel \"%s\"",
							buf.len, w->opts.channel),
					 errdetail("Events of %d bytes or more are skipped for table %s (on_oversize=skip).",
							   limit, quote_qualified_identifier(w->schema_name, w->table_name))));
			stats_count(COUNT_OVERSIZE_SKIPPED);
			break;

		case OVERSIZE_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("pg_notifier event for table %s is %d bytes, the limit is %d bytes",
							quote_qualified_identifier(w->schema_name, w->table_name),
							buf.len, limit),
					 errhint("Watch fewer columns, or use on_oversize => 'reference', 'keys' or 'skip'.")));
			break;

		case OVERSIZE_KEYS:
			if (key_len + (int) sizeof(",\"truncated\":true}") <= limit)
			{
				truncate_to(&buf, key_len);
				appendStringInfoString(&buf, ",\"truncated\":true}");
				send_event(w, buf.data);
				stats_count(COUNT_OVERSIZE_KEYS);
				break;
			}
			/* even the key is too long: send a reference */
			/* FALLTHROUGH */

		case OVERSIZE_REFERENCE:
			ref = payload_store(buf.data);
			truncate_to(&buf, key_len + REF_TAIL_MAX < limit ? key_len : envelope_len);
			appendStringInfo(&buf, ",\"ref\":" INT64_FORMAT ",\"truncated\":true}", ref);
			send_event(w, buf.data);
			stats_count(COUNT_OVERSIZE_REFERENCED);
			break;
	}
	pfree(buf.data);
}

/*
 * A statement-level event: the envelope and the number of rows, which
 * TRUNCATE does not have.  Always far below any limit.
 */
void
emit_statement_event(const Watch *w, ChangeOp op, int64 count, TimestampTz ts)
{
	StringInfoData buf;

	initStringInfo(&buf);
	event_append_envelope(&buf, w, op, ts);
	if (op != OP_TRUNCATE)
		appendStringInfo(&buf, ",\"count\":" INT64_FORMAT, count);
	appendStringInfoChar(&buf, '}');
	send_event(w, buf.data);
	pfree(buf.data);
}
