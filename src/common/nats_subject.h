/*-------------------------------------------------------------------------
 *
 * nats_subject.h
 *	  The subject template of a NATS route: checked by add_nats(), filled
 *	  in by the worker for each event.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_NATS_SUBJECT_H
#define NOTIFIER_NATS_SUBJECT_H

/* the longest template, and the longest value a placeholder becomes */
#define NATS_SUBJECT_MAX_BYTES 255
#define NATS_SUBJECT_VALUE_MAX_BYTES 63

/* the placeholders, in this order */
typedef enum NatsPlaceholder
{
	NATS_PH_CHANNEL,
	NATS_PH_SCHEMA,
	NATS_PH_TABLE,
	NATS_PH_OP,
	NATS_NUM_PLACEHOLDERS
} NatsPlaceholder;

/* NULL when the template is valid, else why not (palloc'd, no input echoed) */
extern char *nats_subject_problem(const char *template);

/*
 * The subject of an event: the template with each placeholder replaced by
 * values[i] (NULL: absent), lower case, a byte that may not stand in a
 * subject token replaced by '_'.  palloc'd.
 */
extern char *nats_subject_fill(const char *template, const char *const *values);

#endif							/* NOTIFIER_NATS_SUBJECT_H */
