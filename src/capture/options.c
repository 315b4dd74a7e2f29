/*-------------------------------------------------------------------------
 *
 * options.c
 *	  The options of a watch: parsing 'name=value' trigger arguments, and
 *	  checking them against the watched table.
 *
 * notifier.watch() turns its SQL arguments into the same 'name=value'
 * strings and runs them through this file, so a trigger created by hand
 * and one created by watch() are validated by one set of rules, with the
 * same messages.
 *
 * Lists (columns, exclude, events) are comma-separated; column names follow
 * SQL identifier rules (unquoted names are folded to lower case; quote
 * others with double quotes).  The channel is taken verbatim, as NOTIFY
 * channel names are case-sensitive.
 *
 * Excluded columns are tracked by attribute number: watch() writes
 * 'exclude_attnums=3,5' next to 'exclude=card,cvv', so that a renamed
 * column stays excluded.  A column that now carries one of the excluded
 * names is excluded too (after RENAME card TO card_legacy; ADD COLUMN card,
 * both are).  A trigger without exclude_attnums (0.1, or written by hand)
 * matches by name only, and a missing name is an error: it may have been
 * renamed.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_index.h"
#include "lib/stringinfo.h"
#include "parser/parse_relation.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/relcache.h"
#include "utils/varlena.h"

#include "capture/options.h"
#include "common/channel.h"
#include "common/sqlutil.h"

typedef struct NamedValue
{
	const char *name;
	int			value;
} NamedValue;

static const NamedValue payload_modes[] = {
	{"keys", PAYLOAD_KEYS},
	{"row", PAYLOAD_ROW},
	{"full", PAYLOAD_FULL},
	{"diff", PAYLOAD_DIFF},
	{NULL, 0}
};

static const NamedValue oversize_policies[] = {
	{"reference", OVERSIZE_REFERENCE},
	{"keys", OVERSIZE_KEYS},
	{"error", OVERSIZE_ERROR},
	{"skip", OVERSIZE_SKIP},
	{NULL, 0}
};

static const NamedValue levels[] = {
	{"row", LEVEL_ROW},
	{"statement", LEVEL_STATEMENT},
	{NULL, 0}
};

static const NamedValue delivery_modes[] = {
	{"auto", DELIVERY_AUTO},
	{"notify", DELIVERY_NOTIFY},
	{"outbox", DELIVERY_OUTBOX},
	{NULL, 0}
};

static const NamedValue event_names[] = {
	{"insert", WATCH_INSERT},
	{"update", WATCH_UPDATE},
	{"delete", WATCH_DELETE},
	{"truncate", WATCH_TRUNCATE},
	{NULL, 0}
};

typedef enum OptionId
{
	OPT_CHANNEL,
	OPT_PAYLOAD,
	OPT_COLUMNS,
	OPT_EXCLUDE,
	OPT_EVENTS,
	OPT_CONDITION,
	OPT_DEDUP,
	OPT_LEVEL,
	OPT_ON_OVERSIZE,
	OPT_DELIVERY,
	OPT_NOTIFY,
	OPT_EXCLUDE_ATTNUMS,
	NUM_OPTIONS
} OptionId;

static const char *const option_names[NUM_OPTIONS] = {
	[OPT_CHANNEL] = "channel",
	[OPT_PAYLOAD] = "payload",
	[OPT_COLUMNS] = "columns",
	[OPT_EXCLUDE] = "exclude",
	[OPT_EVENTS] = "events",
	[OPT_CONDITION] = "condition",
	[OPT_DEDUP] = "dedup",
	[OPT_LEVEL] = "level",
	[OPT_ON_OVERSIZE] = "on_oversize",
	[OPT_DELIVERY] = "delivery",
	[OPT_NOTIFY] = "notify",
	[OPT_EXCLUDE_ATTNUMS] = "exclude_attnums",
};

/* "a, b, c" from a NamedValue table */
static char *
named_value_list(const NamedValue *table)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const NamedValue *nv = table; nv->name; nv++)
		appendStringInfo(&buf, "%s%s", nv == table ? "" : ", ", nv->name);
	return buf.data;
}

/* "channel, payload, ..." from option_names[] */
static char *
option_name_list(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int id = 0; id < NUM_OPTIONS; id++)
		appendStringInfo(&buf, "%s%s", id == 0 ? "" : ", ", option_names[id]);
	return buf.data;
}

static const char *
named_value_name(const NamedValue *table, int value)
{
	for (const NamedValue *nv = table; nv->name; nv++)
		if (nv->value == value)
			return nv->name;
	elog(ERROR, "unexpected pg_notifier option value %d", value);
	return NULL;				/* keep compiler quiet */
}

static int
lookup_named_value(const NamedValue *table, const char *option, const char *value)
{
	for (const NamedValue *nv = table; nv->name; nv++)
		if (pg_strcasecmp(nv->name, value) == 0)
			return nv->value;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for pg_notifier option \"%s\": \"%s\"", option,
					clip_for_message(value)),
			 errhint("Valid values are: %s.", named_value_list(table))));
	return 0;					/* keep compiler quiet */
}

static bool
parse_bool_option(const char *option, const char *value)
{
	bool		result;

	if (!parse_bool(value, &result))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for pg_notifier option \"%s\": \"%s\"", option,
						clip_for_message(value)),
				 errhint("Use true or false.")));
	return result;
}

/* a comma-separated list: identifiers (folded) for columns, words for events */
static List *
parse_list(const char *option, const char *value)
{
	char	   *copy = pstrdup(value);
	List	   *names = NIL;

	if (!SplitIdentifierString(copy, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list in pg_notifier option \"%s\": \"%s\"", option,
						clip_for_message(value)),
				 errhint("Separate names with commas; double-quote names with commas, quotes or upper case.")));
	if (names == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_notifier option \"%s\" must name at least one item", option),
				 errhint("Leave the option out to mean \"all\".")));
	return names;
}

/* a comma-separated list of attribute numbers */
static List *
parse_attnum_list(const char *option, const char *value)
{
	List	   *attnums = NIL;
	const char *p = value;

	for (;;)
	{
		char	   *end;
		long		n = strtol(p, &end, 10);

		if (end == p || n <= 0 || n > MaxAttrNumber || (*end != ',' && *end != '\0'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid list in pg_notifier option \"%s\": \"%s\"",
							option, clip_for_message(value)),
					 errhint("notifier.watch() writes this option: call it again.")));
		attnums = lappend_int(attnums, (int) n);
		if (*end == '\0')
			break;
		p = end + 1;
	}
	return attnums;
}

/*
 * Parse 'name=value' arguments into opts, with defaults for what is
 * missing.  Checks everything that can be checked without the table.
 */
void
parse_watch_options(int nargs, char **args, WatchOptions *opts)
{
	bool		seen[NUM_OPTIONS] = {0};

	memset(opts, 0, sizeof(WatchOptions));
	opts->payload = PAYLOAD_ROW;
	opts->events = WATCH_ALL_EVENTS;
	opts->on_oversize = OVERSIZE_REFERENCE;
	opts->dedup = true;
	opts->level = LEVEL_ROW;

	for (int i = 0; i < nargs; i++)
	{
		const char *arg = args[i];
		const char *eq = strchr(arg, '=');
		const char *value;
		char	   *name;
		int			id;
		ListCell   *lc;

		if (eq == NULL || eq == arg)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("malformed pg_notifier option \"%s\"", clip_for_message(arg)),
					 errhint("Options are written name=value, for example 'channel=orders'.")));
		name = pnstrdup(arg, eq - arg);
		value = eq + 1;

		for (id = 0; id < NUM_OPTIONS; id++)
			if (strcmp(option_names[id], name) == 0)
				break;
		/* 0.1's name of dedup: an SQL keyword, still accepted */
		if (strcmp(name, "coalesce") == 0)
			id = OPT_DEDUP;
		if (id == NUM_OPTIONS)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("unknown pg_notifier option \"%s\"", clip_for_message(name)),
					 errhint("Valid options are: %s.", option_name_list())));
		if (seen[id])
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("pg_notifier option \"%s\" is given more than once", name),
					 errhint("Give each option once.")));
		seen[id] = true;

		switch ((OptionId) id)
		{
			case OPT_CHANNEL:
				check_channel_name(value, "Leave the channel out to use the table's name.");
				opts->channel = pstrdup(value);
				break;
			case OPT_PAYLOAD:
				opts->payload = lookup_named_value(payload_modes, name, value);
				break;
			case OPT_COLUMNS:
				opts->columns = parse_list(name, value);
				break;
			case OPT_EXCLUDE:
				opts->exclude = parse_list(name, value);
				break;
			case OPT_EVENTS:
				opts->events = 0;
				foreach(lc, parse_list(name, value))
					opts->events |= lookup_named_value(event_names, name, lfirst(lc));
				break;
			case OPT_CONDITION:
				if (value[0] == '\0')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("pg_notifier condition must not be empty"),
							 errhint("Leave the condition out to send every change.")));
				opts->condition = pstrdup(value);
				break;
			case OPT_DEDUP:
				opts->dedup = parse_bool_option(name, value);
				break;
			case OPT_LEVEL:
				opts->level = lookup_named_value(levels, name, value);
				break;
			case OPT_ON_OVERSIZE:
				opts->on_oversize = lookup_named_value(oversize_policies, name, value);
				break;
			case OPT_DELIVERY:
				opts->delivery = lookup_named_value(delivery_modes, name, value);
				break;
			case OPT_NOTIFY:
				opts->notify = parse_bool_option(name, value);
				break;
			case OPT_EXCLUDE_ATTNUMS:
				opts->exclude_attnums = parse_attnum_list(name, value);
				break;
			case NUM_OPTIONS:
				break;
		}
		pfree(name);
	}

	if (seen[OPT_NOTIFY] && opts->delivery != DELIVERY_OUTBOX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pg_notifier option \"notify\" applies only to delivery=outbox"),
				 errhint("With delivery=auto or delivery=notify every event is sent with NOTIFY; leave \"notify\" out.")));
}

/*
 * The key of a table: its primary key, else its replica identity index;
 * a list of attribute numbers in index order, NIL if it has neither.
 */
List *
relation_key_attnums(Relation rel)
{
	Oid			indexoid = RelationGetPrimaryKeyIndex(rel);
	Relation	index;
	List	   *attnums = NIL;

	if (!OidIsValid(indexoid))
		indexoid = RelationGetReplicaIndex(rel);
	if (!OidIsValid(indexoid))
		return NIL;

	index = index_open(indexoid, AccessShareLock);
	for (int i = 0; i < index->rd_index->indnkeyatts; i++)
		attnums = lappend_int(attnums, index->rd_index->indkey.values[i]);
	index_close(index, AccessShareLock);
	return attnums;
}

/*
 * The attribute number of a column named in an option; InvalidAttrNumber
 * if it does not exist and elevel lets us go on.
 */
static AttrNumber
column_attnum(Relation rel, const char *option, const char *colname, int elevel)
{
	AttrNumber	attnum = attnameAttNum(rel, colname, false);

	if (attnum <= 0)
	{
		ereport(elevel,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"%s\" does not exist",
						clip_for_message(colname), RelationGetRelationName(rel)),
				 errdetail("The pg_notifier option \"%s\" names it.", option),
				 errhint("If the column was renamed, call notifier.watch() again with its new name.")));
		return InvalidAttrNumber;
	}
	return attnum;
}

/*
 * Check opts against the table: the columns exist, no key column is
 * excluded, no column is both wanted and excluded, payload=keys has a key
 * (watch() and a firing trigger refuse a keyless table alike).  Fills in
 * the default channel (the table's name) if none was given.  Returns the
 * attribute numbers of the columns that events carry.
 *
 * Excluded columns: see the header comment.  The key and "columns" must
 * not overlap them.  Sets opts->exclude_attnums from the names if it was
 * not given (what watch() writes).
 *
 * A column of "columns" that no longer exists is an error for watch() but
 * only a warning for a firing trigger (missing_elevel): leaving it out
 * shows less, never more, and a renamed column should not stop writes.
 */
Bitmapset *
check_watch_options(WatchOptions *opts, Relation rel, int missing_elevel)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	Bitmapset  *wanted = NULL;
	Bitmapset  *excluded = NULL;
	Bitmapset  *result = NULL;
	bool		by_attnum = opts->exclude_attnums != NIL;
	int			attnum;
	ListCell   *lc;

	if (opts->channel == NULL)
	{
		opts->channel = pstrdup(RelationGetRelationName(rel));
		check_channel_name(opts->channel, NULL);
	}

	foreach(lc, opts->columns)
	{
		AttrNumber	attnum = column_attnum(rel, "columns", lfirst(lc), missing_elevel);

		if (attnum != InvalidAttrNumber)
			wanted = bms_add_member(wanted, attnum);
	}

	/* excluded: by attribute number, and by name */
	foreach(lc, opts->exclude_attnums)
	{
		AttrNumber	attnum = lfirst_int(lc);

		if (attnum <= tupdesc->natts &&
			!TupleDescAttr(tupdesc, attnum - 1)->attisdropped)
			excluded = bms_add_member(excluded, attnum);
	}
	foreach(lc, opts->exclude)
	{
		AttrNumber	attnum;

		/* with attribute numbers, a name gone is a column renamed */
		attnum = column_attnum(rel, "exclude", lfirst(lc),
							   by_attnum ? DEBUG1 : ERROR);
		if (attnum != InvalidAttrNumber)
			excluded = bms_add_member(excluded, attnum);
	}

	attnum = -1;
	while ((attnum = bms_next_member(excluded, attnum)) >= 0)
	{
		const char *colname = NameStr(TupleDescAttr(tupdesc, attnum - 1)->attname);

		if (bms_is_member(attnum, wanted))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" is both in columns and in exclude", colname),
					 errhint("Name each column in one of the two options.")));
		if (list_member_int(relation_key_attnums(rel), attnum))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot exclude column \"%s\": it is part of the key of table \"%s\"",
							colname, RelationGetRelationName(rel)),
					 errdetail("Every event carries the key that identifies its row."),
					 errhint("Remove \"%s\" from exclude.", colname)));
	}

	for (int i = 0; i < tupdesc->natts; i++)
	{
		AttrNumber	attnum = i + 1;

		if (TupleDescAttr(tupdesc, i)->attisdropped)
			continue;
		if (opts->columns != NIL && !bms_is_member(attnum, wanted))
			continue;
		if (bms_is_member(attnum, excluded))
			continue;
		result = bms_add_member(result, attnum);
	}

	if (opts->payload == PAYLOAD_KEYS && relation_key_attnums(rel) == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload=keys needs a key, and table \"%s\" has none",
						RelationGetRelationName(rel)),
				 errhint("Add a primary key or a replica identity index, or use payload => 'row'.")));

	/* what watch() writes: the attribute numbers of the names given */
	if (!by_attnum)
	{
		attnum = -1;
		while ((attnum = bms_next_member(excluded, attnum)) >= 0)
			opts->exclude_attnums = lappend_int(opts->exclude_attnums, attnum);
	}
	return result;
}

/*
 * The channel named in trigger arguments, NULL if none: read without
 * parsing the other arguments, so that a trigger whose arguments are bad
 * can still be found (by unwatch(), by the notifier.watches view).
 */
const char *
watch_args_channel(int nargs, char **args)
{
	for (int i = 0; i < nargs; i++)
		if (strncmp(args[i], "channel=", strlen("channel=")) == 0)
			return args[i] + strlen("channel=");
	return NULL;
}

/* the name of a column now; NULL if it does not exist or was dropped */
char *
column_name_now(Oid relid, AttrNumber attnum)
{
	HeapTuple	tuple;
	char	   *name = NULL;

	tuple = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(attnum));
	if (!HeapTupleIsValid(tuple))
		return NULL;
	if (!((Form_pg_attribute) GETSTRUCT(tuple))->attisdropped)
		name = pstrdup(NameStr(((Form_pg_attribute) GETSTRUCT(tuple))->attname));
	ReleaseSysCache(tuple);
	return name;
}

/*
 * The excluded columns by their names now: those of the attribute numbers
 * (a dropped column has none) and the names given that exist.
 */
List *
watch_exclude_names(const WatchOptions *opts, Oid relid)
{
	List	   *names = NIL;
	ListCell   *lc;

	if (opts->exclude_attnums == NIL)
		return opts->exclude;
	foreach(lc, opts->exclude_attnums)
	{
		char	   *name = column_name_now(relid, lfirst_int(lc));

		if (name != NULL)
			names = lappend(names, name);
	}
	foreach(lc, opts->exclude)
	{
		AttrNumber	attnum = get_attnum(relid, lfirst(lc));

		if (attnum > 0 && !list_member_int(opts->exclude_attnums, attnum))
			names = lappend(names, lfirst(lc));
	}
	return names;
}

/* name=a,b,c -- the names quoted where SQL needs it */
char *
watch_list_arg(const char *name, List *names)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s=", name);
	foreach(lc, names)
	{
		if (lc != list_head(names))
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, quote_identifier(lfirst(lc)));
	}
	return buf.data;
}

List *
watch_event_names(int events)
{
	List	   *names = NIL;

	for (const NamedValue *nv = event_names; nv->name; nv++)
		if (events & nv->value)
			names = lappend(names, (char *) nv->name);
	return names;
}

/*
 * The canonical trigger arguments for opts (channel must be set): what
 * watch() gives CREATE TRIGGER, and what parse_watch_options() reads back.
 */
List *
watch_options_to_args(const WatchOptions *opts)
{
	List	   *args = NIL;

	Assert(opts->channel != NULL);
	args = lappend(args, psprintf("channel=%s", opts->channel));
	args = lappend(args, psprintf("payload=%s", payload_mode_name(opts->payload)));
	if (opts->columns != NIL)
		args = lappend(args, watch_list_arg("columns", opts->columns));
	if (opts->exclude != NIL)
		args = lappend(args, watch_list_arg("exclude", opts->exclude));
	if (opts->exclude_attnums != NIL)
	{
		StringInfoData buf;
		ListCell   *lc;

		initStringInfo(&buf);
		appendStringInfoString(&buf, "exclude_attnums=");
		foreach(lc, opts->exclude_attnums)
			appendStringInfo(&buf, "%s%d", lc == list_head(opts->exclude_attnums) ? "" : ",",
							 lfirst_int(lc));
		args = lappend(args, buf.data);
	}
	args = lappend(args, watch_list_arg("events", watch_event_names(opts->events)));
	if (opts->condition != NULL)
		args = lappend(args, psprintf("condition=%s", opts->condition));
	args = lappend(args, psprintf("dedup=%s", opts->dedup ? "true" : "false"));
	args = lappend(args, psprintf("level=%s", watch_level_name(opts->level)));
	args = lappend(args, psprintf("on_oversize=%s", oversize_policy_name(opts->on_oversize)));
	args = lappend(args, psprintf("delivery=%s", delivery_mode_name(opts->delivery)));
	if (opts->delivery == DELIVERY_OUTBOX)
		args = lappend(args, psprintf("notify=%s", opts->notify ? "true" : "false"));
	return args;
}

const char *
payload_mode_name(PayloadMode mode)
{
	return named_value_name(payload_modes, mode);
}

const char *
watch_level_name(WatchLevel level)
{
	return named_value_name(levels, level);
}

const char *
oversize_policy_name(OversizePolicy policy)
{
	return named_value_name(oversize_policies, policy);
}

const char *
delivery_mode_name(DeliveryMode mode)
{
	return named_value_name(delivery_modes, mode);
}
