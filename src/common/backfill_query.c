/*-------------------------------------------------------------------------
 *
 * backfill_query.c
 *	  The two queries of a backfill batch (see worker/backfill.c for why
 *	  two), built as text by backfill() -- which prepares them, as the
 *	  caller, to check them before it accepts the backfill -- and by the
 *	  worker, which runs them.  Built in one place so that what was checked
 *	  is what runs.
 *
 *	lock:  SELECT * FROM (SELECT <key> FROM [ONLY] t WHERE <key> > $lower
 *		   ORDER BY <key> LIMIT $limit FOR SHARE) locked ORDER BY <key>
 *
 * (sorted again: a row that a concurrent update changed while the lock
 * waited comes back as its new version, whose key may be higher; the
 * last row is the highest key locked, the batch's upper bound)
 *	read:  SELECT <key and event columns> FROM [ONLY] t
 *		   WHERE ((<where>\n)) AND <key> > $lower AND <key> <= $upper
 *		   ORDER BY <key>
 *
 * Parameters: $1..$n the lower key, $n+1..$2n the upper key (in the key
 * columns' types), $2n+1 the limit.  A multi-column key is compared column
 * by column, "k1 >= $1 AND (k1 > $1 OR (k1 = $1 AND k2 > $2))", so that an
 * index on the key serves both the condition and the order.  Every
 * operator is the one of the key type's default btree operator class,
 * named with its schema (OPERATOR(pg_catalog.>)): the worker's
 * search_path holds only pg_catalog and pg_temp, and no bare operator may
 * resolve to one a user created.
 *
 * "where" was checked to be one expression (backfill_api.c): between the
 * parentheses it is one operand, a newline ending any "--" comment it
 * ends with.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/nbtree.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "common/backfill_query.h"

/* OPERATOR(schema.name) */
static char *
qualified_operator(Oid opno)
{
	HeapTuple	tuple = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	Form_pg_operator form;
	char	   *result;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	form = (Form_pg_operator) GETSTRUCT(tuple);
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(form->oprnamespace)),
					  NameStr(form->oprname));
	ReleaseSysCache(tuple);
	return result;
}

static char *
btree_operator(Oid opfamily, Oid opcintype, int16 strategy)
{
	Oid			opno = get_opfamily_member(opfamily, opcintype, opcintype, strategy);

	if (!OidIsValid(opno))
		elog(ERROR, "missing operator %d(%u,%u) in opfamily %u",
			 strategy, opcintype, opcintype, opfamily);
	return qualified_operator(opno);
}

static bool
attnum_listed(const AttrNumber *attnums, int n, AttrNumber attnum)
{
	for (int i = 0; i < n; i++)
		if (attnums[i] == attnum)
			return true;
	return false;
}

/*
 * The scan of rel for the Watch w (of rel: its columns and key).  A table
 * without a key, or with a key column whose type has no default btree
 * operator class, cannot be backfilled: error.
 */
void
backfill_scan_init(BackfillScan *scan, Relation rel, const Watch *w)
{
	TupleDesc	tupdesc = RelationGetDescr(rel);
	int			n = w->nkeys;

	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" has no key to backfill in",
						RelationGetRelationName(rel)),
				 errdetail("A backfill reads the rows in key order, in short transactions, and resumes from the last key it sent."),
				 errhint("Add a primary key, or a replica identity index (ALTER TABLE ... REPLICA IDENTITY USING INDEX).")));

	scan->relation = psprintf("%s%s",
							  rel->rd_rel->relkind == RELKIND_RELATION ? "ONLY " : "",
							  quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
														 RelationGetRelationName(rel)));
	scan->nkeys = n;
	scan->keytypes = palloc(sizeof(Oid) * n);
	scan->keynames = palloc(sizeof(char *) * n);
	scan->lt = palloc(sizeof(char *) * n);
	scan->le = palloc(sizeof(char *) * n);
	scan->eq = palloc(sizeof(char *) * n);
	scan->ge = palloc(sizeof(char *) * n);
	scan->gt = palloc(sizeof(char *) * n);
	scan->cmp = palloc(sizeof(FmgrInfo) * n);
	scan->collations = palloc(sizeof(Oid) * n);
	for (int i = 0; i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, w->keys[i].attnum - 1);
		Oid			opclass = GetDefaultOpClass(att->atttypid, BTREE_AM_OID);
		Oid			opfamily;
		Oid			opcintype;

		if (!OidIsValid(opclass))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("key column \"%s\" of table \"%s\" has a type without an ordering",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errdetail("Type %s has no default operator class for btree.",
							   format_type_be(att->atttypid)),
					 errhint("A backfill reads rows in key order; give the table a key of an ordered type.")));
		opfamily = get_opclass_family(opclass);
		opcintype = get_opclass_input_type(opclass);
		scan->keytypes[i] = att->atttypid;
		scan->keynames[i] = pstrdup(quote_identifier(NameStr(att->attname)));
		scan->lt[i] = btree_operator(opfamily, opcintype, BTLessStrategyNumber);
		scan->le[i] = btree_operator(opfamily, opcintype, BTLessEqualStrategyNumber);
		scan->eq[i] = btree_operator(opfamily, opcintype, BTEqualStrategyNumber);
		scan->ge[i] = btree_operator(opfamily, opcintype, BTGreaterEqualStrategyNumber);
		scan->gt[i] = btree_operator(opfamily, opcintype, BTGreaterStrategyNumber);
		fmgr_info(get_opfamily_proc(opfamily, opcintype, opcintype, BTORDER_PROC),
				  &scan->cmp[i]);
		scan->collations[i] = att->attcollation;
	}

	/* the key, then the event's other columns */
	scan->attnums = palloc(sizeof(AttrNumber) * (n + w->ncolumns));
	scan->natts = 0;
	for (int i = 0; i < n; i++)
		scan->attnums[scan->natts++] = w->keys[i].attnum;
	for (int i = 0; i < w->ncolumns; i++)
		if (!attnum_listed(scan->attnums, scan->natts, w->columns[i].attnum))
			scan->attnums[scan->natts++] = w->columns[i].attnum;
	scan->colnames = palloc(sizeof(char *) * Max(scan->natts, 1));
	for (int i = 0; i < scan->natts; i++)
		scan->colnames[i] = pstrdup(quote_identifier(NameStr(TupleDescAttr(tupdesc, scan->attnums[i] - 1)->attname)));
}

/*
 * Compare two keys (nkeys values each) as the queries order them: <0, 0,
 * >0.
 */
int
backfill_compare_keys(const BackfillScan *scan, const Datum *a, const Datum *b)
{
	for (int i = 0; i < scan->nkeys; i++)
	{
		int32		r = DatumGetInt32(FunctionCall2Coll(&scan->cmp[i], scan->collations[i],
														a[i], b[i]));

		if (r != 0)
			return r;
	}
	return 0;
}

int
backfill_nparams(const BackfillScan *scan)
{
	return 2 * scan->nkeys + 1;
}

/* the types of $1..: lower key, upper key, limit */
Oid *
backfill_param_types(const BackfillScan *scan)
{
	Oid		   *types = palloc(sizeof(Oid) * backfill_nparams(scan));

	for (int i = 0; i < scan->nkeys; i++)
		types[i] = types[scan->nkeys + i] = scan->keytypes[i];
	types[2 * scan->nkeys] = INT8OID;
	return types;
}

/*
 * The key compared with the key in $first..: above it (upper false) or at
 * most it (upper true), column by column from column i on.
 */
static void
append_key_bound(StringInfo buf, const BackfillScan *scan, int first,
				 bool upper, int i)
{
	const char *name = scan->keynames[i];
	int			param = first + i;

	if (i == scan->nkeys - 1)
	{
		appendStringInfo(buf, "%s %s $%d", name,
						 upper ? scan->le[i] : scan->gt[i], param);
		return;
	}
	appendStringInfo(buf, "(%s %s $%d OR (%s %s $%d AND ",
					 name, upper ? scan->lt[i] : scan->gt[i], param,
					 name, scan->eq[i], param);
	append_key_bound(buf, scan, first, upper, i + 1);
	appendStringInfoString(buf, "))");
}

static void
append_bound(StringInfo buf, const BackfillScan *scan, bool upper)
{
	int			first = upper ? scan->nkeys + 1 : 1;

	appendStringInfoChar(buf, '(');
	if (scan->nkeys > 1)
		appendStringInfo(buf, "%s %s $%d AND ", scan->keynames[0],
						 upper ? scan->le[0] : scan->ge[0], first);
	append_key_bound(buf, scan, first, upper, 0);
	appendStringInfoChar(buf, ')');
}

static void
append_order(StringInfo buf, const BackfillScan *scan)
{
	appendStringInfoString(buf, " ORDER BY ");
	for (int i = 0; i < scan->nkeys; i++)
		appendStringInfo(buf, "%s%s USING %s", i > 0 ? ", " : "",
						 scan->keynames[i], scan->lt[i]);
}

static void
append_keys(StringInfo buf, const BackfillScan *scan)
{
	for (int i = 0; i < scan->nkeys; i++)
		appendStringInfo(buf, "%s%s", i > 0 ? ", " : "", scan->keynames[i]);
}

/*
 * The lock query: the next $limit keys after $lower (from the start
 * unless after), their rows locked FOR SHARE.
 */
char *
backfill_lock_sql(const BackfillScan *scan, bool after)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT * FROM (SELECT ");
	append_keys(&buf, scan);
	appendStringInfo(&buf, " FROM %s WHERE ", scan->relation);
	if (after)
		append_bound(&buf, scan, false);
	else
		appendStringInfoString(&buf, "true");
	append_order(&buf, scan);
	appendStringInfo(&buf, " LIMIT $%d FOR SHARE) locked", 2 * scan->nkeys + 1);
	append_order(&buf, scan);
	return buf.data;
}

/*
 * The read query: the rows after $lower (unless not after) up to $upper
 * that satisfy "where" (NULL: all).
 */
char *
backfill_read_sql(const BackfillScan *scan, const char *where, bool after)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	for (int i = 0; i < scan->natts; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", scan->colnames[i]);
	appendStringInfo(&buf, " FROM %s WHERE ", scan->relation);
	if (where != NULL)
		appendStringInfo(&buf, "((%s\n)) AND ", where);
	if (after)
	{
		append_bound(&buf, scan, false);
		appendStringInfoString(&buf, " AND ");
	}
	append_bound(&buf, scan, true);
	append_order(&buf, scan);
	return buf.data;
}
