/*-------------------------------------------------------------------------
 *
 * event.h
 *	  The JSON event built from one change.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_EVENT_H
#define NOTIFIER_EVENT_H

#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "capture/watch.h"

typedef enum ChangeOp
{
	OP_INSERT,
	OP_UPDATE,
	OP_DELETE,
	OP_TRUNCATE,
	OP_READ						/* a row sent by a backfill (newslot) */
} ChangeOp;

/* one change, as the trigger saw it */
typedef struct ChangeEvent
{
	ChangeOp	op;
	TupleTableSlot *oldslot;	/* UPDATE, DELETE */
	TupleTableSlot *newslot;	/* INSERT, UPDATE, READ */
	bool	   *changed;		/* UPDATE: per Watch.columns entry */
	TimestampTz ts;				/* start of the statement that made it */

	/*
	 * How to read the Watch's columns and key from each slot, entry by entry
	 * (attnum 0: that row's version has no such column); NULL: as the Watch
	 * says.  Set by event_frame() for rows of another table version.
	 */
	const WatchColumn *oldcols;
	const WatchColumn *newcols;
	const WatchColumn *oldkeys;
	const WatchColumn *newkeys;
} ChangeEvent;

extern bool event_columns_differ(const WatchColumn *oldcols,
								 const WatchColumn *newcols, int ncols,
								 TupleTableSlot *oldslot, TupleTableSlot *newslot,
								 bool *changed);
extern const Watch *event_frame(const Watch *w, const Watch *oldversion,
								const Watch *newversion, ChangeEvent *ev);
extern void event_append_envelope(StringInfo buf, const Watch *w, ChangeOp op,
								  TimestampTz ts);
extern void event_append_key(StringInfo buf, const Watch *w,
							 const ChangeEvent *ev);
extern void event_append_body(StringInfo buf, const Watch *w,
							  const ChangeEvent *ev);

extern void event_build(StringInfo buf, const Watch *w, const ChangeEvent *ev,
						int *envelope_len, int *key_len);

#endif							/* NOTIFIER_EVENT_H */
