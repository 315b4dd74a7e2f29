/*-------------------------------------------------------------------------
 *
 * sqlutil.h
 *	  Small helpers of the SQL-facing code: text[] and lists, set-returning
 *	  results, the is-a-table check, input clipped for messages.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_SQLUTIL_H
#define NOTIFIER_SQLUTIL_H

#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/palloc.h"
#include "utils/array.h"
#include "utils/relcache.h"
#include "utils/tuplestore.h"

extern void require_arg(FunctionCallInfo fcinfo, int argno, const char *name,
						const char *hint);
extern List *text_array_to_list(ArrayType *array, const char *argname);
extern Datum list_to_text_array(List *items);
extern TupleDesc materialize_srf(FunctionCallInfo fcinfo, Tuplestorestate **store);
extern void require_table(Relation rel, const char *hint);
extern void rethrow_in_context(MemoryContext cxt, const char *context,
							   bool drop_query) pg_attribute_noreturn();
extern void clip_copy(char *dst, const char *src, size_t size);

/* how much of an input a message echoes */
#define CLIP_INPUT_BYTES 64
extern const char *clip_for_message(const char *input);

#endif							/* NOTIFIER_SQLUTIL_H */
