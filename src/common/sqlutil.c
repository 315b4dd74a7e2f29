/*-------------------------------------------------------------------------
 *
 * sqlutil.c
 *	  Small helpers of the SQL-facing code, each needed by several files:
 *	  arguments that must not be NULL, text[] to a list of C strings and back, a set-returning function's
 *	  tuplestore, the check that a relation is a table, and the clipping of
 *	  user input echoed in messages (and of queries built around it, in
 *	  errors raised again).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "common/sqlutil.h"

/* Error out when argument argno, called name, is NULL. */
void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name, const char *hint)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name),
				 errhint("%s", hint)));
}

/*
 * text[] -> List of C strings, in order.  argname names the array in
 * errors: it must be one-dimensional and hold no NULL.
 */
List *
text_array_to_list(ArrayType *array, const char *argname)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", argname)));
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL", argname),
					 errhint("Remove the NULL elements.")));
		result = lappend(result, TextDatumGetCString(elems[i]));
	}
	return result;
}

/* List of C strings -> text[] */
Datum
list_to_text_array(List *items)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(items), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, items)
	{
		elems[n++] = CStringGetTextDatum(lfirst(lc));
	}
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* A set-returning function's tuplestore, to be filled in one go. */
TupleDesc
materialize_srf(FunctionCallInfo fcinfo, Tuplestorestate **store)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
#if PG_VERSION_NUM >= 150000
	InitMaterializedSRF(fcinfo, 0);
#else
	TupleDesc	tupdesc;
	MemoryContext old;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	MemoryContextSwitchTo(old);
#endif
	*store = rsinfo->setResult;
	return rsinfo->setDesc;
}

/*
 * Error out unless rel is a table or a partitioned table; hint says what
 * the caller wanted it for.
 */
void
require_table(Relation rel, const char *hint)
{
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errhint("%s", hint)));
}

/*
 * User input as a message may echo it: whole if it is short, else its first
 * CLIP_INPUT_BYTES bytes (never cutting a character) and "...".  Every
 * message that quotes an option value, a condition, a column name from an
 * option or a URL goes through here, so that no input of any length reaches
 * the client or the server log whole.
 */
const char *
clip_for_message(const char *input)
{
	int			len = strlen(input);

	if (len <= CLIP_INPUT_BYTES)
		return input;
	len = pg_mbcliplen(input, len, CLIP_INPUT_BYTES);
	return psprintf("%.*s...", len, input);
}

/*
 * Copy src into dst, a buffer of size bytes, cut at a character boundary
 * of the database encoding: a cut inside a multi-byte character would make
 * the text invalid, and every client that converts it to another encoding
 * (SELECT ... FROM notifier.stats with client_encoding LATIN1) would fail.
 */
void
clip_copy(char *dst, const char *src, size_t size)
{
	int			len = pg_mbcliplen(src, (int) strnlen(src, size), (int) size - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * In a PG_CATCH() block: raise the error again, in memory context cxt,
 * with context as its context and -- when drop_query -- without the
 * internal query it shows (a statement built around user input of any
 * length, which no message may echo whole).
 */
void
rethrow_in_context(MemoryContext cxt, const char *context, bool drop_query)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	edata->context = pstrdup(context);
	if (drop_query)
	{
		edata->internalquery = NULL;
		edata->internalpos = 0;
	}
	edata->cursorpos = 0;
	ReThrowError(edata);
}
