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
 *	notifier:row:<channel>		 AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW
 *								 [WHEN (condition)]
 *	notifier:truncate:<channel>  AFTER TRUNCATE FOR EACH STATEMENT
 *
 * both with the same canonical 'name=value' arguments, which is what the
 * notifier.watches view reads back.  The kind comes before the channel, so
 * no two (kind, channel) pairs share a name (0.1's notifier_<channel> and
 * notifier_<channel>_truncate did: channels "orders" and "orders_truncate"),
 * and no 0.1 name (they begin "notifier_") is taken.  Triggers are found by
 * function and channel, never by name, so 0.1's are still replaced and
 * dropped.  On a partitioned table PostgreSQL clones the row trigger onto
 * every partition; events name the partitioned table.  Inheritance children
 * are not watched: watch() warns.
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
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/indexing.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "commands/async.h"
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
#include "utils/resowner.h"

#include "capture/options.h"
#include "common/sqlutil.h"
#include "pg_notifier.h"
#include "capture/watch.h"
#include "capture/watch_cache.h"
#include "api/watch_api.h"

/* the longest condition an error shows whole, with the error's position */
#define CONDITION_ECHO_BYTES 1024

/*
 * Trigger names: notifier:<kind>:<channel>; a channel too long for a name is
 * cut and ends in a hash of it, and only channels 9 bytes shorter than
 * the room left are used whole, so that a cut name never equals a whole
 * one.
 */
static char *
watch_trigger_name(const char *kind, const char *channel)
{
	int			room = NAMEDATALEN - 1 - strlen("notifier::") - strlen(kind);
	int			len = strlen(channel);

	if (len <= room - 9)
		return psprintf("notifier:%s:%s", kind, channel);
	len = pg_mbcliplen(channel, len, room - 9);
	return psprintf("notifier:%s:%.*s_%08x", kind, len, channel,
					hash_bytes((const unsigned char *) channel, strlen(channel)));
}

/*
 * Run a CREATE/DROP TRIGGER built here.  SPI puts the statement in the
 * context of its errors, and the statement holds the condition, of any
 * length: an error of a long one keeps only the error itself.
 */
static void
run_ddl(const char *sql)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PG_TRY();
	{
		if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not run: %s", clip_for_message(sql));
	}
	PG_CATCH();
	{
		if (strlen(sql) <= CONDITION_ECHO_BYTES)
			PG_RE_THROW();
		rethrow_in_context(cxt, "CREATE TRIGGER or DROP TRIGGER run by pg_notifier", true);
	}
	PG_END_TRY();
	SPI_finish();
}

/*
 * Drop the notify_change triggers of (rel, channel); returns how many.
 */
static int
drop_watch_triggers(Relation rel, const char *channel)
{
	List	   *names = NIL;
	ListCell   *lc;

	foreach(lc, notify_change_triggers(rel, false))
	{
		Trigger    *tg = lfirst(lc);

		if (strcmp(watch_trigger_channel(tg, rel), channel) == 0)
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

/*
 * The channel unwatch(table) means when it is not given: the table's name,
 * if the table is watched on it; else, the table being renamed since
 * watch() (which wrote the name it had then), its only watch's channel.
 */
static const char *
default_unwatch_channel(Relation rel)
{
	List	   *channels = NIL;
	ListCell   *lc;

	foreach(lc, notify_change_triggers(rel, false))
	{
		const char *channel = watch_trigger_channel(lfirst(lc), rel);

		if (strcmp(channel, RelationGetRelationName(rel)) == 0)
			return channel;
		if (!list_member(channels, makeString((char *) channel)))
			channels = lappend(channels, makeString((char *) channel));
	}
	if (list_length(channels) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_PARAMETER),
				 errmsg("table \"%s\" is watched on %d channels, none named after it",
						RelationGetRelationName(rel), list_length(channels)),
				 errhint("Name the channel: notifier.unwatch(table, channel).  SELECT * FROM notifier.watches lists them.")));
	if (channels != NIL)
		return strVal(linitial(channels));
	return RelationGetRelationName(rel);
}

/* an expression checked by parses_as_one_expression() */
typedef struct ExpressionCheck
{
	const char *query;
	const char *what;
} ExpressionCheck;

/* errcontext for the expression check: point into the expression */
static void
expression_error_callback(void *arg)
{
	const ExpressionCheck *check = (const ExpressionCheck *) arg;
	int			pos = geterrposition();

	/* the expression is shown with the position only if it is short */
	if (pos > 0)
	{
		errposition(0);
		if (strlen(check->query) <= CONDITION_ECHO_BYTES)
		{
			internalerrposition(pos);
			internalerrquery(check->query);
		}
	}
	errcontext("%s", check->what);
}

/*
 * Does query, "SELECT (<expression>)", parse as a plain SELECT of one
 * column without an alias, so that the expression between its parentheses
 * is exactly one expression?  (Syntax errors are raised, in the context
 * "what".)  The condition of watch() and the "where" of backfill() are
 * checked so before they are put into SQL built as text.
 */
bool
parses_as_one_expression(const char *query, const char *what)
{
	ExpressionCheck check = {query, what};
	ErrorContextCallback errcallback;
	List	   *parsetree;
	SelectStmt *stmt = NULL;

	errcallback.callback = expression_error_callback;
	errcallback.arg = &check;
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
	return !(stmt == NULL || stmt->op != SETOP_NONE ||
			 list_length(stmt->targetList) != 1 ||
			 linitial_node(ResTarget, stmt->targetList)->name != NULL ||
			 stmt->fromClause || stmt->whereClause || stmt->groupClause ||
			 stmt->havingClause || stmt->windowClause || stmt->sortClause ||
			 stmt->limitCount || stmt->limitOffset || stmt->lockingClause ||
			 stmt->withClause || stmt->intoClause || stmt->distinctClause ||
			 stmt->valuesLists);
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
	if (!parses_as_one_expression(psprintf("SELECT (%s)", condition),
								  "pg_notifier condition"))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("pg_notifier condition is not a single expression: %s",
						clip_for_message(condition)),
				 errhint("Write a boolean expression over OLD and NEW, such as NEW.status <> OLD.status.")));
}

/*
 * Open the table to watch or unwatch, refusing what cannot be watched.
 * unwatch() of a table that can never be watched (a catalog, one of ours)
 * is not an error: it is not watched; NULL then.
 */
static Relation
open_watched_table(FunctionCallInfo fcinfo, bool unwatch)
{
	Relation	rel;
	Oid			relid;

	require_arg(fcinfo, 0, "table", unwatch ?
				"Pass the table to unwatch, for example 'public.orders'." :
				"Pass the table to watch, for example 'public.orders'.");
	relid = PG_GETARG_OID(0);

	/* the lock CREATE TRIGGER takes; a regclass may name no relation */
	rel = try_relation_open(relid, ShareRowExclusiveLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid),
				 errhint("Name the table, for example 'public.orders'; it may have been dropped.")));

	require_table(rel, unwatch ?
				  "Only tables and partitioned tables are ever watched." :
				  "Only tables and partitioned tables can be watched; views, sequences, foreign tables and materialized views cannot.");
	if (IsCatalogRelation(rel) ||
		RelationGetNamespace(rel) == get_namespace_oid(NOTIFIER_SCHEMA, false))
	{
		if (unwatch)
		{
			ereport(NOTICE,
					(errmsg("table \"%s\" is not watched, skipping",
							RelationGetRelationName(rel)),
					 errdetail("System catalogs and pg_notifier's own tables are never watched.")));
			relation_close(rel, ShareRowExclusiveLock);
			return NULL;
		}
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot watch table \"%s\"", RelationGetRelationName(rel)),
				 errdetail("System catalogs and pg_notifier's own tables cannot be watched.")));
	}
	if (pg_class_aclcheck(relid, GetUserId(), ACL_TRIGGER) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 unwatch ?
				 errmsg("permission denied to unwatch table \"%s\"", RelationGetRelationName(rel)) :
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
	Relation	rel = open_watched_table(fcinfo, false);
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
		args = lappend(args, psprintf("dedup=%s", PG_GETARG_BOOL(7) ? "true" : "false"));
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
	if (opts.condition != NULL)
		check_condition_syntax(opts.condition);

	/* rows of inheritance children do not fire the parent's triggers */
	if (rel->rd_rel->relkind == RELKIND_RELATION &&
		find_inheritance_children(RelationGetRelid(rel), NoLock) != NIL)
		ereport(WARNING,
				(errmsg("changes of the inheritance children of table \"%s\" are not reported",
						RelationGetRelationName(rel)),
				 errdetail("Triggers of a table do not fire for rows of its inheritance children, even when they are changed through it."),
				 errhint("Watch each child table as well, or use declarative partitioning, whose partitions are watched with their table.")));

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
						 quote_identifier(watch_trigger_name("row", opts.channel)));
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
						 quote_identifier(watch_trigger_name("truncate", opts.channel)),
						 table, tgargs.data));

	/* the worker serves a channel fed by the outbox from there only */
	Async_Notify(NOTIFIER_CONTROL_CHANNEL, "watches");
	relation_close(rel, NoLock);
	PG_RETURN_TEXT_P(cstring_to_text(opts.channel));
}

PG_FUNCTION_INFO_V1(notifier_unwatch);

/*
 * notifier.unwatch(relation, channel) -> whether anything was watched
 *
 * Without a channel: the table's name, or, the table having been renamed,
 * its only watch (see default_unwatch_channel()).
 */
Datum
notifier_unwatch(PG_FUNCTION_ARGS)
{
	Relation	rel = open_watched_table(fcinfo, true);
	const char *channel;
	int			dropped;

	if (rel == NULL)
		PG_RETURN_BOOL(false);
	channel = PG_ARGISNULL(1) ? default_unwatch_channel(rel)
		: text_to_cstring(PG_GETARG_TEXT_PP(1));
	dropped = drop_watch_triggers(rel, channel);
	if (dropped == 0)
		ereport(NOTICE,
				(errmsg("table \"%s\" is not watched on channel \"%s\", skipping",
						RelationGetRelationName(rel), clip_for_message(channel)),
				 errhint("SELECT * FROM notifier.watches lists what is watched.")));
	else
		Async_Notify(NOTIFIER_CONTROL_CHANNEL, "watches");
	relation_close(rel, NoLock);
	PG_RETURN_BOOL(dropped > 0);
}

/*
 * Parse trigger arguments; on an error, its message instead (NULL if none).
 * The parse runs in a subtransaction, as PL/pgSQL runs an exception block,
 * so that the view over every trigger survives one written by hand.
 */
static char *
try_parse_watch_options(int nargs, char **args, WatchOptions *opts)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		parse_watch_options(nargs, args, opts);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		error = edata->message;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return error;
}

PG_FUNCTION_INFO_V1(notifier_watch_options);

/*
 * notifier.watch_options(trigger oid) -> (channel, payload, columns, ...,
 *										   valid, error)
 *
 * The effective options of a notify_change trigger, defaults filled in, and
 * whether its arguments are valid.  For a trigger whose arguments are not,
 * only the channel (as unwatch() finds it), valid = false and the reason.
 */
Datum
notifier_watch_options(PG_FUNCTION_ARGS)
{
	Oid			tgoid = PG_GETARG_OID(0);
	Oid			relid;
	Oid			parentid;
	Oid			fnoid;
	int			nargs;
	char	  **args;
	WatchOptions opts;
	const char *channel;
	char	   *error;
	List	   *exclude;
	TupleDesc	tupdesc;
	Datum		values[13];
	bool		nulls[13] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	trigger_catalog_lookup(tgoid, &relid, &parentid, &fnoid, &nargs, &args);
	if (fnoid != notify_change_oid())
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("trigger with OID %u is not a pg_notifier trigger", tgoid),
				 errdetail("It does not execute notifier.notify_change()."),
				 errhint("SELECT * FROM notifier.watches lists the watches and their triggers.")));

	channel = watch_args_channel(nargs, args);
	values[0] = CStringGetTextDatum(channel ? channel : get_rel_name(relid));
	error = try_parse_watch_options(nargs, args, &opts);
	if (error != NULL)
	{
		for (int i = 1; i < 11; i++)
			nulls[i] = true;
		values[11] = BoolGetDatum(false);
		values[12] = CStringGetTextDatum(error);
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}

	values[1] = CStringGetTextDatum(payload_mode_name(opts.payload));
	values[2] = list_to_text_array(opts.columns);
	nulls[2] = opts.columns == NIL;
	exclude = watch_exclude_names(&opts, relid);
	values[3] = list_to_text_array(exclude);
	nulls[3] = exclude == NIL;
	values[4] = list_to_text_array(watch_event_names(opts.events));
	values[5] = opts.condition ? CStringGetTextDatum(opts.condition) : (Datum) 0;
	nulls[5] = opts.condition == NULL;
	values[6] = BoolGetDatum(opts.dedup);
	values[7] = CStringGetTextDatum(watch_level_name(opts.level));
	values[8] = CStringGetTextDatum(oversize_policy_name(opts.on_oversize));
	values[9] = CStringGetTextDatum(delivery_mode_name(opts.delivery));
	/* do LISTEN clients see the events? */
	values[10] = BoolGetDatum(opts.delivery != DELIVERY_OUTBOX || opts.notify);
	values[11] = BoolGetDatum(true);
	nulls[12] = true;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
