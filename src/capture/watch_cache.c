/*-------------------------------------------------------------------------
 *
 * watch_cache.c
 *	  Resolving a notify_change trigger into a Watch, once per backend.
 *
 * The first time a trigger fires in a backend, its arguments are parsed and
 * validated (options.c) and resolved against the firing relation: which
 * columns events carry, the key, the type of each column, the names as
 * JSON strings.  The result is cached by trigger OID.
 *
 * Invalidation: any relcache invalidation of the firing or the watched
 * relation (ALTER TABLE, CREATE/DROP TRIGGER, index changes, renames) and
 * any change to a type or a schema (events carry the schema's name) marks
 * entries invalid; the next call rebuilds them.
 * The memory of a replaced entry is handed to the current transaction, not
 * freed, so a caller further up the stack that still uses it stays safe.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/htup_details.h"
#include "utils/fmgroids.h"
#include "catalog/pg_trigger.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "catalog/indexing.h"
#include "access/table.h"
#include "access/genam.h"
#include "access/xact.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "capture/watch_cache.h"
#include "pg_notifier.h"

typedef struct WatchEntry
{
	Oid			tgoid;			/* hash key */
	Watch	   *watch;
} WatchEntry;

static HTAB *watch_hash = NULL;

static void
invalidate_watches(Oid relid)
{
	HASH_SEQ_STATUS status;
	WatchEntry *entry;

	if (watch_hash == NULL)
		return;
	hash_seq_init(&status, watch_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		Watch	   *w = entry->watch;

		if (!OidIsValid(relid) || w->relid == relid || w->watched_relid == relid)
			w->valid = false;
	}
}

static void
relcache_callback(Datum arg, Oid relid)
{
	invalidate_watches(relid);
}

/* a type or a schema changed (ALTER SCHEMA ... RENAME): every watch */
static void
syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_watches(InvalidOid);
}

/*
 * Read one pg_trigger row: its relation, parent trigger and arguments.
 */
void
trigger_catalog_lookup(Oid tgoid, Oid *relid, Oid *parentid, Oid *fnoid,
					   int *nargs, char ***args)
{
	Relation	tgrel;
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tuple;
	Form_pg_trigger form;

	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&skey, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(tgoid));
	scan = systable_beginscan(tgrel, TriggerOidIndexId, true, NULL, 1, &skey);
	tuple = systable_getnext(scan);
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("trigger with OID %u does not exist", tgoid),
				 errhint("Pass the OID of a notify_change trigger, from pg_trigger.oid.")));
	form = (Form_pg_trigger) GETSTRUCT(tuple);
	*relid = form->tgrelid;
	*parentid = form->tgparentid;
	*fnoid = form->tgfoid;
	*nargs = form->tgnargs;
	*args = palloc0(sizeof(char *) * Max(form->tgnargs, 1));
	if (form->tgnargs > 0)
	{
		bool		isnull;
		bytea	   *val;
		char	   *p;

		val = DatumGetByteaPP(fastgetattr(tuple, Anum_pg_trigger_tgargs,
										  RelationGetDescr(tgrel), &isnull));
		p = VARDATA_ANY(val);
		for (int i = 0; i < form->tgnargs; i++)
		{
			(*args)[i] = pstrdup(p);
			p += strlen(p) + 1;
		}
	}
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
}

/*
 * For a trigger cloned onto a partition, the relation of its topmost
 * parent trigger: the table watch() was called on.
 */
static Oid
trigger_root_relid(Oid tgoid)
{
	Oid			relid;
	Oid			parentid = tgoid;
	Oid			fnoid;
	int			nargs;
	char	  **args;

	do
		trigger_catalog_lookup(parentid, &relid, &parentid, &fnoid, &nargs, &args);
	while (OidIsValid(parentid));
	return relid;
}

static WatchColumn *
make_columns(Relation rel, List *attnums, MemoryContext cxt)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	WatchColumn *cols = palloc0(sizeof(WatchColumn) * Max(list_length(attnums), 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, attnums)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, lfirst_int(lc) - 1);
		StringInfoData name;

		initStringInfo(&name);
		escape_json(&name, NameStr(att->attname));
		cols[i].attnum = att->attnum;
		cols[i].typid = att->atttypid;
		cols[i].typlen = att->attlen;
		cols[i].typbyval = att->attbyval;
		cols[i].json_name = name.data;
		cols[i].type = json_type_info(att->atttypid, cxt);
		i++;
	}
	return cols;
}

/*
 * The columns of a partition in the column order of the partitioned table
 * that was watched, so that every partition sends rows alike.
 */
static List *
columns_in_parent_order(Relation rel, Oid parentid, Bitmapset *columns)
{
	Relation	parent = relation_open(parentid, AccessShareLock);
	TupleDesc	tupdesc = RelationGetDescr(parent);
	List	   *attnums = NIL;

	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		AttrNumber	attnum;

		if (att->attisdropped)
			continue;
		attnum = attnameAttNum(rel, NameStr(att->attname), false);
		if (bms_is_member(attnum, columns))
			attnums = lappend_int(attnums, attnum);
	}
	relation_close(parent, AccessShareLock);
	return attnums;
}

/*
 * Attribute numbers of the partitioned table that was watched, as the
 * partition numbers the same columns (a column that is gone is left out).
 */
static List *
attnums_in_partition(List *attnums, Oid parentid, Relation rel)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, attnums)
	{
		char	   *name = column_name_now(parentid, lfirst_int(lc));
		AttrNumber	attnum = name ? attnameAttNum(rel, name, false) : InvalidAttrNumber;

		if (attnum > 0)
			result = lappend_int(result, attnum);
	}

	/*
	 * every one gone: still by attribute number, so that a missing name is no
	 * error
	 */
	if (result == NIL && attnums != NIL)
		result = list_make1_int(MaxAttrNumber);
	return result;
}

static char *
json_string(const char *str)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, str);
	return buf.data;
}

/*
 * Build the Watch of a trigger.  Everything is allocated in a new context
 * that only becomes long-lived once the build has succeeded.
 */
static Watch *
watch_build(TriggerData *trigdata)
{
	Trigger    *tg = trigdata->tg_trigger;
	Relation	rel = trigdata->tg_relation;
	MemoryContext cxt;
	MemoryContext oldcxt;
	Watch	   *w;
	Bitmapset  *columns;
	List	   *attnums = NIL;
	List	   *keys;
	int			attnum = -1;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_notifier watch",
								ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);

	w = palloc0(sizeof(Watch));
	w->cxt = cxt;
	w->tgoid = tg->tgoid;
	w->relid = RelationGetRelid(rel);
	w->watched_relid = tg->tgisclone ? trigger_root_relid(tg->tgoid) : w->relid;

	parse_watch_options(tg->tgnargs, tg->tgargs, &w->opts);
	if (w->relid != w->watched_relid)
		w->opts.exclude_attnums = attnums_in_partition(w->opts.exclude_attnums,
													   w->watched_relid, rel);
	if (w->opts.channel == NULL)
		w->opts.channel = get_rel_name(w->watched_relid);
	columns = check_watch_options(&w->opts, rel, WARNING);
	if (w->opts.condition != NULL && tg->tgqual == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger \"%s\" has a pg_notifier condition but no WHEN clause",
						tg->tgname),
				 errhint("Create the trigger with notifier.watch(), or put the condition in CREATE TRIGGER ... WHEN (...).")));

	w->schema_name = get_namespace_name(get_rel_namespace(w->watched_relid));
	w->table_name = get_rel_name(w->watched_relid);
	w->json_schema = json_string(w->schema_name);
	w->json_table = json_string(w->table_name);

	if (w->watched_relid == w->relid)
	{
		while ((attnum = bms_next_member(columns, attnum)) >= 0)
			attnums = lappend_int(attnums, attnum);
	}
	else
		attnums = columns_in_parent_order(rel, w->watched_relid, columns);
	w->ncolumns = list_length(attnums);
	w->columns = make_columns(rel, attnums, cxt);

	/* with the missing values of columns added since a row was written */
	w->tupdesc = CreateTupleDescCopyConstr(RelationGetDescr(rel));
	keys = relation_key_attnums(rel);
	w->nkeys = list_length(keys);
	w->keys = make_columns(rel, keys, cxt);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextSetParent(cxt, CacheMemoryContext);
	w->valid = true;
	return w;
}

/*
 * The Watch of the firing trigger, built or rebuilt as needed.
 */
Watch *
watch_lookup(TriggerData *trigdata)
{
	Oid			tgoid = trigdata->tg_trigger->tgoid;
	WatchEntry *entry;
	Watch	   *w;
	bool		found;

	if (watch_hash == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(WatchEntry);
		ctl.hcxt = CacheMemoryContext;
		watch_hash = hash_create("pg_notifier watches", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, syscache_callback, (Datum) 0);
	}

	entry = hash_search(watch_hash, &tgoid, HASH_FIND, &found);
	if (found && entry->watch->valid)
		return entry->watch;

	w = watch_build(trigdata);

	/* the build may have run invalidations: look the entry up again */
	entry = hash_search(watch_hash, &tgoid, HASH_ENTER, &found);
	if (found)
		MemoryContextSetParent(entry->watch->cxt, TopTransactionContext);
	entry->watch = w;
	return w;
}

/* notifier.notify_change() */
Oid
notify_change_oid(void)
{
	return LookupFuncName(list_make2(makeString(NOTIFIER_SCHEMA),
									 makeString("notify_change")),
						  0, NULL, false);
}

/*
 * The watches of rel: its notify_change triggers that are not clones on a
 * partition; with row_only, only the row-level ones (a watch has one,
 * besides its TRUNCATE trigger).
 */
List *
notify_change_triggers(Relation rel, bool row_only)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	Oid			fnoid = notify_change_oid();
	List	   *triggers = NIL;

	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &trigdesc->triggers[i];

		if (tg->tgfoid == fnoid && !tg->tgisclone &&
			(!row_only || TRIGGER_FOR_ROW(tg->tgtype)))
			triggers = lappend(triggers, tg);
	}
	return triggers;
}

/*
 * The channel a notify_change trigger sends on, read without parsing its
 * other arguments (which may be bad, in a trigger written by hand).
 */
const char *
watch_trigger_channel(Trigger *tg, Relation rel)
{
	const char *channel = watch_args_channel(tg->tgnargs, tg->tgargs);

	return channel ? channel : RelationGetRelationName(rel);
}

/* the row trigger of rel's watch on channel; NULL if there is none */
Trigger *
watch_trigger_of_channel(Relation rel, const char *channel)
{
	ListCell   *lc;

	foreach(lc, notify_change_triggers(rel, true))
	{
		Trigger    *tg = lfirst(lc);

		if (strcmp(watch_trigger_channel(tg, rel), channel) == 0)
			return tg;
	}
	return NULL;
}

/*
 * The Watch of one of rel's triggers, outside the trigger's firing (a
 * backfill reads the rows of the watched table itself, which for a
 * partitioned table is the parent whose trigger never fires).
 */
Watch *
watch_lookup_trigger(Relation rel, Trigger *tg)
{
	TriggerData td;

	memset(&td, 0, sizeof(td));
	td.type = T_TriggerData;
	td.tg_relation = rel;
	td.tg_trigger = tg;
	return watch_lookup(&td);
}
