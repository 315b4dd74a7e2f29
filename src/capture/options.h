/*-------------------------------------------------------------------------
 *
 * options.h
 *	  The options of a watch: parsed from 'name=value' trigger arguments
 *	  and checked against the watched table.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_OPTIONS_H
#define NOTIFIER_OPTIONS_H

#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"

typedef enum PayloadMode
{
	PAYLOAD_KEYS,
	PAYLOAD_ROW,
	PAYLOAD_FULL,
	PAYLOAD_DIFF
} PayloadMode;

typedef enum WatchLevel
{
	LEVEL_ROW,					/* an event per row change */
	LEVEL_STATEMENT				/* an event per table and operation per xact */
} WatchLevel;

typedef enum OversizePolicy
{
	OVERSIZE_REFERENCE,
	OVERSIZE_KEYS,
	OVERSIZE_ERROR,
	OVERSIZE_SKIP
} OversizePolicy;

typedef enum DeliveryMode
{
	DELIVERY_AUTO,				/* NOTIFY, and the outbox when the channel is
								 * routed */
	DELIVERY_NOTIFY,			/* the event is a NOTIFY payload */
	DELIVERY_OUTBOX				/* the event is a row of notifier.outbox */
} DeliveryMode;

/* bits of WatchOptions.events */
#define WATCH_INSERT	0x01
#define WATCH_UPDATE	0x02
#define WATCH_DELETE	0x04
#define WATCH_TRUNCATE	0x08
#define WATCH_ALL_EVENTS (WATCH_INSERT | WATCH_UPDATE | WATCH_DELETE | WATCH_TRUNCATE)

typedef struct WatchOptions
{
	char	   *channel;		/* NULL: the table's name */
	PayloadMode payload;
	List	   *columns;		/* column names (char *); NIL: all */
	List	   *exclude;		/* column names (char *) */
	List	   *exclude_attnums;	/* their attribute numbers (int), from
									 * watch(); NIL: by name only (0.1) */
	int			events;			/* WATCH_* bits */
	char	   *condition;		/* SQL over OLD/NEW, or NULL */
	bool		dedup;			/* merge a row's events within a transaction */
	WatchLevel	level;
	OversizePolicy on_oversize;
	DeliveryMode delivery;
	bool		notify;			/* outbox: the worker also sends a NOTIFY */
} WatchOptions;

extern void parse_watch_options(int nargs, char **args, WatchOptions *opts);
extern Bitmapset *check_watch_options(WatchOptions *opts, Relation rel,
									  int missing_elevel);
extern List *watch_options_to_args(const WatchOptions *opts);
extern char *watch_list_arg(const char *name, List *names);
extern const char *payload_mode_name(PayloadMode mode);
extern const char *oversize_policy_name(OversizePolicy policy);
extern const char *watch_level_name(WatchLevel level);
extern const char *delivery_mode_name(DeliveryMode mode);
extern List *watch_event_names(int events);
extern List *relation_key_attnums(Relation rel);
extern char *column_name_now(Oid relid, AttrNumber attnum);
extern const char *watch_args_channel(int nargs, char **args);
extern List *watch_exclude_names(const WatchOptions *opts, Oid relid);

#endif							/* NOTIFIER_OPTIONS_H */
