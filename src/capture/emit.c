/*-------------------------------------------------------------------------
 *
 * emit.c
 *	  Sending one event: with NOTIFY after the size check, or into the
 *	  outbox (delivery => 'outbox', outbox_writer.c).
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
 * An outbox event has no size limit; with notify => true the NOTIFY the
 * worker will send for it is decided here, by the same policy.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"
#include "utils/builtins.h"

#include "capture/emit.h"
#include "capture/outbox_writer.h"
#include "capture/routed_channels.h"
#include "common/payloads.h"
#include "pg_notifier.h"
#include "common/stats.h"

/* longest ,"ref":<int64>,"truncated":true} */
#define REF_TAIL_MAX 48

/*
 * Deliver an event (notify_payload: what NOTIFY carries for it; NULL:
 * nothing):
 *	auto	NOTIFY it; and, when its channel has a route, write it to the
 *			outbox too, from where the worker delivers it to the routes
 *	notify	NOTIFY it
 *	outbox	write it to the outbox, with what the worker is to NOTIFY
 */
static void
deliver(const Watch *w, const char *event, const char *notify_payload,
		TimestampTz ts)
{
	if (w->opts.delivery == DELIVERY_OUTBOX)
	{
		outbox_write(w, event, w->opts.notify ? notify_payload : NULL, ts);
		return;
	}
	if (notify_payload != NULL)
	{
		Async_Notify(w->opts.channel, notify_payload);
		stats_count(COUNT_EVENTS_SENT);
	}
	if (w->opts.delivery == DELIVERY_AUTO && channel_is_routed(w->opts.channel))
		outbox_write(w, event, NULL, ts);
}

/*
 * What NOTIFY carries for the event in buf (envelope, key and body, of
 * envelope_len and key_len bytes up to the end of each): the event itself,
 * or what on_oversize makes of it; NULL for nothing.
 */
static char *
notify_payload(const Watch *w, StringInfo buf, int envelope_len, int key_len)
{
	int			limit = Min(notifier_max_payload_bytes, NOTIFIER_NOTIFY_LIMIT);
	int64		ref;

	if (buf->len < limit)
		return buf->data;

	switch (w->opts.on_oversize)
	{
		case OVERSIZE_SKIP:
			ereport(WARNING,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("pg_notifier skipped an event of %d bytes on channel \"%s\"",
							buf->len, w->opts.channel),
					 errdetail("Events of %d bytes or more are skipped for table %s (on_oversize=skip).",
							   limit, quote_qualified_identifier(w->schema_name, w->table_name))));
			stats_count(COUNT_OVERSIZE_SKIPPED);
			return NULL;

		case OVERSIZE_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("pg_notifier event for table %s is too large",
							quote_qualified_identifier(w->schema_name, w->table_name)),
					 errdetail("It is %d bytes; the limit is %d bytes.", buf->len, limit),
					 errhint("Watch fewer columns, or use on_oversize => 'reference', 'keys' or 'skip'.")));
			return NULL;		/* keep compiler quiet */

		case OVERSIZE_KEYS:
			if (key_len + (int) sizeof(",\"truncated\":true}") <= limit)
			{
				stats_count(COUNT_OVERSIZE_KEYS);
				return psprintf("%.*s,\"truncated\":true}", key_len, buf->data);
			}
			/* even the key is too long: send a reference */
			/* FALLTHROUGH */

		case OVERSIZE_REFERENCE:
			break;
	}
	ref = payload_store(buf->data, w->opts.channel);
	stats_count(COUNT_OVERSIZE_REFERENCED);
	return psprintf("%.*s,\"ref\":" INT64_FORMAT ",\"truncated\":true}",
					key_len + REF_TAIL_MAX < limit ? key_len : envelope_len,
					buf->data, ref);
}

void
emit_event(const Watch *w, const ChangeEvent *ev)
{
	StringInfoData buf;
	int			envelope_len;
	int			key_len;
	char	   *payload = NULL;

	initStringInfo(&buf);
	event_build(&buf, w, ev, &envelope_len, &key_len);

	/* an outbox event has no size limit: only its NOTIFY has */
	if (w->opts.delivery != DELIVERY_OUTBOX || w->opts.notify)
		payload = notify_payload(w, &buf, envelope_len, key_len);
	deliver(w, buf.data, payload, ev->ts);
	if (payload != NULL && payload != buf.data)
		pfree(payload);
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
	deliver(w, buf.data, buf.data, ts);
	pfree(buf.data);
}
