/*-------------------------------------------------------------------------
 *
 * jsonout.h
 *	  Writing column values as JSON, exactly as to_jsonb() sees them.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_JSONOUT_H
#define NOTIFIER_JSONOUT_H

#include "fmgr.h"
#include "lib/stringinfo.h"

typedef struct JsonTypeInfo JsonTypeInfo;

extern JsonTypeInfo *json_type_info(Oid typid, MemoryContext cxt);
extern void json_append_value(StringInfo buf, Datum value, bool isnull,
							  JsonTypeInfo *info);

#endif							/* NOTIFIER_JSONOUT_H */
