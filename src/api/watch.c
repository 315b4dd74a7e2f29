/*-------------------------------------------------------------------------
 *
 * watch.c
 *	  notifier.watch(), notifier.unwatch(), notifier.watch_options(): the
 *	  friendly way to create, drop and list notify_change triggers.
 *
 * watch(table, channel, ...) validates every option first, then replaces
 * the triggers of that (table, channel) pair, so calling it again with
 * other options changes the watch.  It creates at most two triggers:
 *
 *	notifier_<channel>			 AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW
 *								 [WHEN (condition)]
 *	notifier_<channel>_truncate  AFTER TRUNCATE FOR EACH STATEMENT
 *
 * both with the same canonical 'name=value' arguments, which is what the
 * notifier.watches view reads back.  On a partitioned table PostgreSQL
 * clones the row trigger onto every partition; events name the partitioned
 * table.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/indexing.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "capture/options.h"
#include "common/sqlutil.h"
#include "pg_notifier.h"
#include "capture/watch.h"

static Oid
notify_change_oid(void)
{
	return LookupFuncName(list_make2(makeString(NOTIFIER_SCHEMA),
									 makeString("notify_change")),
						  0, NULL, false);
}

/*
 * Trigger names: notifier_<channel>[_truncate], cut to fit in a name; a cut
 * name ends in a hash of the channel so that different channels stay
 * apart.
 */
static char *
watch_trigger_name(const char *channel, const char *suffix)
{
	int			room = NAMEDATALEN - 1 - strlen("notifier_") - strlen(suffix);
	int			len = strlen(channel);

	if (len <= room)
		return psprintf("notifier_%s%s", channel, suffix);
	len = pg_mbcliplen(channel, len, room - 9);
	return psprintf("notifier_%.*s_%08x%s", len, channel,
					hash_bytes((const unsigned char *) channel, strlen(channel)),
					suffix);
}

/*
 * The channel a notify_change trigger sends on.
 */
static char *
trigger_channel(Trigger *tg, Relation rel)
{
	WatchOptions opts;

	parse_watch_options(tg->tgnargs, tg->tgargs, &opts);
	return opts.channel ? opts.channel : RelationGetRelationName(rel);
}

static void
run_ddl(const char *sql)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not run: %s", sql);
	SPI_finish();
}

/*
 * Drop the notify_change triggers of (rel, channel); returns how many.
 */
static int
drop_watch_triggers(Relation rel, const char *channel)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	Oid			fnoid = notify_change_oid();
	List	   *names = NIL;
	ListCell   *lc;

	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &trigdesc->triggers[i];

		if (tg->tgfoid == fnoid && !tg->tgisclone &&
			strcmp(trigger_channel(tg, rel), channel) == 0)
			names = lappend(names, pstrdup(tg->tgname));
	}

	/* trigdesc goes away with the first DROP: names were copied above */
	foreach(lc, names)
		run_ddl(psprintf("DROP TRIGGER %s ON %s",
						 quote_identifier(lfirst(lc)),
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel))));
	return list_length(names);
}

/* errcontext for the condition check: point into the condition */
static void
condition_error_callback(void *arg)
{
	const char *query = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(query);
	}
	errcontext("pg_notifier condition");
}

/*
 * The condition becomes the WHEN clause of a CREATE TRIGGER built as text,
 * so it must be exactly one expression: parse "SELECT (condition)" and
 * accept only a plain one-column SELECT.  Whether the expression makes
 * sense (OLD/NEW, columns, boolean) CREATE TRIGGER checks.
 */
static void
check_condition_syntax(const char *condition)
{
	char	   *query = psprintf("SELECT (%s)", condition);
	ErrorContextCallback errcallback;
	List	   *parsetree;
	SelectStmt *stmt = NULL;

	errcallback.callback = condition_error_callback;
	errcallback.arg = query;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
#if PG_VERSION_NUM >= 140000
	parsetree = raw_parser(query, RAW_PARSE_DEFAULT);
#else
	parsetree = raw_parser(query);
#endif
	error_context_stack = errcallback.previous;

	if (list_length(parsetree) == 1)
	{
		Node	   *node = linitial_node(RawStmt, parsetree)->stmt;

		if (IsA(node, SelectStmt))
			stmt = (SelectStmt *) node;
	}
	if (stmt == NULL || stmt->op != SETOP_NONE ||
		list_length(stmt->targetList) != 1 ||
		stmt->fromClause || stmt->whereClause || stmt->groupClause ||
		stmt->havingClause || stmt->windowClause || stmt->sortClause ||
		stmt->limitCount || stmt->limitOffset || stmt->lockingClause ||
		stmt->withClause || stmt->intoClause || stmt->distinctClause ||
		stmt->valuesLists)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("pg_notifier condition is not a single expression: %s", condition),
				 errhint("Write a boolean expression over OLD and NEW, such as NEW.status <> OLD.status.")));
}

/* open the table to watch or unwatch, refusing what cannot be watched */
static Relation
open_watched_table(FunctionCallInfo fcinfo)
{
	Relation	rel;
	Oid			relid;

	require_arg(fcinfo, 0, "table", "Pass the table to watch, for example 'public.orders'.");
	relid = PG_GETARG_OID(0);

	/* the lock CREATE TRIGGER takes */
	rel = relation_open(relid, ShareRowExclusiveLock);

	require_table(rel, "Only tables and partitioned tables can be watched; views, sequences, foreign tables and materialized views cannot.");
	if (IsCatalogRelation(rel) ||
		RelationGetNamespace(rel) == get_namespace_oid(NOTIFIER_SCHEMA, false))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot watch table \"%s\"", RelationGetRelationName(rel)),
				 errdetail("System catalogs and pg_notifier's own tables cannot be watched.")));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_TRIGGER) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to watch table \"%s\"", RelationGetRelationName(rel)),
				 errhint("Watching a table needs the TRIGGER privilege on it, as CREATE TRIGGER does.")));
	return rel;
}

PG_FUNCTION_INFO_V1(notifier_watch);

/*
 * notifier.watch(relation, channel, payload, columns, exclude, events,
 *				  condition, coalesce, level, on_oversize, delivery, notify)
 *	  -> channel
 *
 * A NULL argument means the default.
 */
Datum
notifier_watch(PG_FUNCTION_ARGS)
{
	Relation	rel = open_watched_table(fcinfo);
	List	   *args = NIL;
	WatchOptions opts;
	char	  **argv;
	StringInfoData tgargs;
	ListCell   *lc;
	int			i = 0;
	char	   *table;

	/* the SQL arguments become trigger arguments, checked as such */
	if (!PG_ARGISNULL(1))
		args = lappend(args, psprintf("channel=%s", text_to_cstring(PG_GETARG_TEXT_PP(1))));
	if (!PG_ARGISNULL(2))
		args = lappend(args, psprintf("payload=%s", text_to_cstring(PG_GETARG_TEXT_PP(2))));
	if (!PG_ARGISNULL(3))
		args = lappend(args, watch_list_arg("columns", text_array_to_list(PG_GETARG_ARRAYTYPE_P(3), "columns")));
	if (!PG_ARGISNULL(4))
		args = lappend(args, watch_list_arg("exclude", text_array_to_list(PG_GETARG_ARRAYTYPE_P(4), "exclude")));
	if (!PG_ARGISNULL(5))
		args = lappend(args, watch_list_arg("events", text_array_to_list(PG_GETARG_ARRAYTYPE_P(5), "events")));
	if (!PG_ARGISNULL(6))
		args = lappend(args, psprintf("condition=%s", text_to_cstring(PG_GETARG_TEXT_PP(6))));
	if (!PG_ARGISNULL(7))
		args = lappend(args, psprintf("coalesce=%s", PG_GETARG_BOOL(7) ? "true" : "false"));
	if (!PG_ARGISNULL(8))
		args = lappend(args, psprintf("level=%s", text_to_cstring(PG_GETARG_TEXT_PP(8))));
	if (!PG_ARGISNULL(9))
		args = lappend(args, psprintf("on_oversize=%s", text_to_cstring(PG_GETARG_TEXT_PP(9))));
	if (!PG_ARGISNULL(10))
		args = lappend(args, psprintf("delivery=%s", text_to_cstring(PG_GETARG_TEXT_PP(10))));
	if (!PG_ARGISNULL(11))
		args = lappend(args, psprintf("notify=%s", PG_GETARG_BOOL(11) ? "true" : "false"));

	argv = palloc(sizeof(char *) * Max(list_length(args), 1));
	foreach(lc, args)
		argv[i++] = lfirst(lc);
	parse_watch_options(i, argv, &opts);
	check_watch_options(&opts, rel, ERROR);
	if (opts.payload == PAYLOAD_KEYS && relation_key_attnums(rel) == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload=keys needs a key, and table \"%s\" has none",
						RelationGetRelationName(rel)),
				 errhint("Add a primary key or a replica identity index, or use payload => 'row'.")));
	if (opts.condition != NULL)
		check_condition_syntax(opts.condition);

	/* replace whatever watched this (table, channel) before */
	drop_watch_triggers(rel, opts.channel);

	table = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									   RelationGetRelationName(rel));
	initStringInfo(&tgargs);
	args = watch_options_to_args(&opts);
	foreach(lc, args)
		appendStringInfo(&tgargs, "%s%s", lc == list_head(args) ? "" : ", ",
						 quote_literal_cstr(lfirst(lc)));

	if (opts.events & (WATCH_INSERT | WATCH_UPDATE | WATCH_DELETE))
	{
		StringInfoData sql;
		List	   *ops = NIL;

		if (opts.events & WATCH_INSERT)
			ops = lappend(ops, "INSERT");
		if (opts.events & WATCH_UPDATE)
			ops = lappend(ops, "UPDATE");
		if (opts.events & WATCH_DELETE)
			ops = lappend(ops, "DELETE");

		initStringInfo(&sql);
		appendStringInfo(&sql, "CREATE TRIGGER %s AFTER ",
						 quote_identifier(watch_trigger_name(opts.channel, "")));
		foreach(lc, ops)
			appendStringInfo(&sql, "%s%s", lc == list_head(ops) ? "" : " OR ",
							 (char *) lfirst(lc));
		appendStringInfo(&sql, " ON %s FOR EACH ROW ", table);
		if (opts.condition != NULL)
			appendStringInfo(&sql, "WHEN (%s) ", opts.condition);
		appendStringInfo(&sql, "EXECUTE FUNCTION notifier.notify_change(%s)", tgargs.data);
		run_ddl(sql.data);
	}
	if (opts.events & WATCH_TRUNCATE)
		run_ddl(psprintf("CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION notifier.notify_change(%s)",
						 quote_identifier(watch_trigger_name(opts.channel, "_truncate")),
						 table, tgargs.data));

	relation_close(rel, NoLock);
	PG_RETURN_TEXT_P(cstring_to_text(opts.channel));
}

PG_FUNCTION_INFO_V1(notifier_unwatch);

/*
 * notifier.unwatch(relation, channel) -> whether anything was watched
 */
Datum
notifier_unwatch(PG_FUNCTION_ARGS)
{
	Relation	rel = open_watched_table(fcinfo);
	char	   *channel;
	int			dropped;

	channel = PG_ARGISNULL(1) ? pstrdup(RelationGetRelationName(rel))
		: text_to_cstring(PG_GETARG_TEXT_PP(1));
	dropped = drop_watch_triggers(rel, channel);
	if (dropped == 0)
		ereport(NOTICE,
				(errmsg("table \"%s\" is not watched on channel \"%s\", skipping",
						RelationGetRelationName(rel), channel),
				 errhint("SELECT * FROM notifier.watches lists what is watched.")));
	relation_close(rel, NoLock);
	PG_RETURN_BOOL(dropped > 0);
}

PG_FUNCTION_INFO_V1(notifier_watch_options);

/*
 * notifier.watch_options(trigger oid) -> (channel, payload, columns, ...)
 *
 * The effective options of a notify_change trigger, defaults filled in.
 */
Datum
notifier_watch_options(PG_FUNCTION_ARGS)
{
	Oid			tgoid = PG_GETARG_OID(0);
	Oid			relid;
	Oid			parentid;
	int			nargs;
	char	  **args;
	WatchOptions opts;
	List	   *exclude;
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	trigger_catalog_lookup(tgoid, &relid, &parentid, &nargs, &args);
	parse_watch_options(nargs, args, &opts);

	values[0] = CStringGetTextDatum(opts.channel ? opts.channel : get_rel_name(relid));
	values[1] = CStringGetTextDatum(payload_mode_name(opts.payload));
	values[2] = list_to_text_array(opts.columns);
	nulls[2] = opts.columns == NIL;
	exclude = watch_exclude_names(&opts, relid);
	values[3] = list_to_text_array(exclude);
	nulls[3] = exclude == NIL;
	values[4] = list_to_text_array(watch_event_names(opts.events));
	values[5] = opts.condition ? CStringGetTextDatum(opts.condition) : (Datum) 0;
	nulls[5] = opts.condition == NULL;
	values[6] = BoolGetDatum(opts.coalesce);
	values[7] = CStringGetTextDatum(watch_level_name(opts.level));
	values[8] = CStringGetTextDatum(oversize_policy_name(opts.on_oversize));
	values[9] = CStringGetTextDatum(delivery_mode_name(opts.delivery));
	/* do LISTEN clients see the events? */
	values[10] = BoolGetDatum(opts.delivery == DELIVERY_NOTIFY || opts.notify);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
