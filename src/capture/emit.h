/*-------------------------------------------------------------------------
 *
 * emit.h
 *	  Sending an event: size check, oversize policy, NOTIFY.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_EMIT_H
#define NOTIFIER_EMIT_H

#include "capture/event.h"

extern void emit_event(const Watch *w, const ChangeEvent *ev);
extern void emit_statement_event(const Watch *w, ChangeOp op, int64 count,
								 TimestampTz ts);

#endif							/* NOTIFIER_EMIT_H */
