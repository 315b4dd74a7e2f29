/*-------------------------------------------------------------------------
 *
 * jsonout.c
 *	  Writing column values as JSON text, value for value what to_jsonb()
 *	  gives for them.
 *
 * to_jsonb() sorts every type into a category (see json_categorize_type()
 * in PostgreSQL's jsonb.c) and converts by category: numbers stay
 * numbers unless their text is not a JSON number (NaN, Infinity), booleans
 * are true/false, date/timestamp/timestamptz take the ISO form of
 * JsonEncodeDateTime(), json and jsonb are nested, arrays become nested
 * JSON arrays, composites objects, a non-built-in type with a cast to json
 * uses that cast, and everything else is its output function's text as a
 * JSON string.  Domains behave as their base type.
 *
 * The category and the functions of a type are looked up once, into a
 * JsonTypeInfo that lives in the caller's (long-lived) memory context, so
 * the per-row path does no catalog access.  Composite field infos are
 * filled in lazily, since a composite value's row type is only known from
 * the value.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "parser/parse_coerce.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "capture/jsonout.h"

typedef enum JsonCategory
{
	JC_BOOL,					/* true / false */
	JC_INT4,					/* int2, int4: digits */
	JC_INT8,					/* int8: digits */
	JC_NUMBER,					/* numeric, float: number, or string if its
								 * text is not a JSON number */
	JC_DATETIME,				/* date, timestamp, timestamptz: ISO string */
	JC_JSON,					/* json text as it is */
	JC_JSONB,					/* jsonb as text */
	JC_TEXT,					/* text, varchar: escaped without a call */
	JC_ARRAY,
	JC_COMPOSITE,
	JC_CAST,					/* a cast to json */
	JC_STRING					/* output function, escaped */
} JsonCategory;

struct JsonTypeInfo
{
	Oid			srctypid;		/* the type asked for, maybe a domain */
	Oid			typid;			/* after domains: the base type */
	JsonCategory category;
	FmgrInfo	func;			/* output function, or cast to json */
	MemoryContext cxt;

	/* JC_ARRAY */
	JsonTypeInfo *elem;
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;

	/* JC_COMPOSITE: one info per attribute, filled on first use */
	int			nfields;
	JsonTypeInfo **fields;
};

JsonTypeInfo *
json_type_info(Oid typid, MemoryContext cxt)
{
	JsonTypeInfo *info = MemoryContextAllocZero(cxt, sizeof(JsonTypeInfo));
	Oid			funcoid = InvalidOid;
	bool		isvarlena;

	info->srctypid = typid;
	typid = getBaseType(typid);
	info->typid = typid;
	info->cxt = cxt;

	switch (typid)
	{
		case BOOLOID:
			info->category = JC_BOOL;
			break;
		case INT2OID:
		case INT4OID:
			info->category = JC_INT4;
			break;
		case INT8OID:
			info->category = JC_INT8;
			break;
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			info->category = JC_NUMBER;
			break;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			info->category = JC_DATETIME;
			break;
		case JSONOID:
			info->category = JC_JSON;
			break;
		case JSONBOID:
			info->category = JC_JSONB;
			break;
		case TEXTOID:
		case VARCHAROID:
			info->category = JC_TEXT;
			break;
		default:
			if (OidIsValid(get_element_type(typid)))
			{
				Oid			elemtype = get_element_type(typid);

				info->category = JC_ARRAY;
				info->elem = json_type_info(elemtype, cxt);
				get_typlenbyvalalign(elemtype, &info->elmlen, &info->elmbyval,
									 &info->elmalign);
			}
			else if (type_is_rowtype(typid))
				info->category = JC_COMPOSITE;
			else
			{
				info->category = JC_STRING;
				/* like to_jsonb(): a non-built-in type may cast to json */
				if (typid >= FirstNormalObjectId)
				{
					Oid			castfunc;

					if (find_coercion_pathway(JSONOID, typid, COERCION_EXPLICIT,
											  &castfunc) == COERCION_PATH_FUNC &&
						OidIsValid(castfunc))
					{
						info->category = JC_CAST;
						funcoid = castfunc;
					}
				}
			}
			break;
	}

	if (info->category == JC_NUMBER || info->category == JC_STRING)
		getTypeOutputInfo(typid, &funcoid, &isvarlena);
	if (OidIsValid(funcoid))
		fmgr_info_cxt(funcoid, &info->func, cxt);

	return info;
}

static void json_append_array(StringInfo buf, Datum value, JsonTypeInfo *info);
static void json_append_composite(StringInfo buf, Datum value,
								  JsonTypeInfo *info);

void
json_append_value(StringInfo buf, Datum value, bool isnull, JsonTypeInfo *info)
{
	char		numbuf[MAXINT8LEN + 1];
	char		datebuf[MAXDATELEN + 1];
	char	   *str;

	if (isnull)
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}

	switch (info->category)
	{
		case JC_BOOL:
			if (DatumGetBool(value))
				appendBinaryStringInfo(buf, "true", 4);
			else
				appendBinaryStringInfo(buf, "false", 5);
			break;
		case JC_INT4:
			/* int2 is passed as an int16 Datum; widen it by its own type */
			if (info->typid == INT2OID)
				pg_ltoa((int32) DatumGetInt16(value), numbuf);
			else
				pg_ltoa(DatumGetInt32(value), numbuf);
			appendStringInfoString(buf, numbuf);
			break;
		case JC_INT8:
			pg_lltoa(DatumGetInt64(value), numbuf);
			appendStringInfoString(buf, numbuf);
			break;
		case JC_NUMBER:
			str = OutputFunctionCall(&info->func, value);
			if (IsValidJsonNumber(str, strlen(str)))
				appendStringInfoString(buf, str);
			else
				escape_json(buf, str);
			pfree(str);
			break;
		case JC_DATETIME:
			appendStringInfoChar(buf, '"');
			appendStringInfoString(buf,
								   JsonEncodeDateTime(datebuf, value,
													  info->typid, NULL));
			appendStringInfoChar(buf, '"');
			break;
		case JC_JSON:
			{
				text	   *t = DatumGetTextPP(value);

				appendBinaryStringInfo(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			break;
		case JC_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);

				str = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
				appendStringInfoString(buf, str);
				pfree(str);
			}
			break;
		case JC_TEXT:
			str = TextDatumGetCString(value);
			escape_json(buf, str);
			pfree(str);
			break;
		case JC_ARRAY:
			json_append_array(buf, value, info);
			break;
		case JC_COMPOSITE:
			json_append_composite(buf, value, info);
			break;
		case JC_CAST:
			{
				text	   *t = DatumGetTextPP(FunctionCall1(&info->func, value));

				appendBinaryStringInfo(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			break;
		case JC_STRING:
			str = OutputFunctionCall(&info->func, value);
			escape_json(buf, str);
			pfree(str);
			break;
	}
}

/*
 * One dimension of an array, recursively: the nested-array form to_jsonb()
 * gives a multi-dimensional array.
 */
static void
json_append_array_dim(StringInfo buf, int dim, int ndims, int *dims,
					  Datum *values, bool *nulls, int *pos,
					  JsonTypeInfo *elem)
{
	appendStringInfoChar(buf, '[');
	for (int i = 0; i < dims[dim]; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, ',');
		if (dim + 1 == ndims)
		{
			json_append_value(buf, values[*pos], nulls[*pos], elem);
			(*pos)++;
		}
		else
			json_append_array_dim(buf, dim + 1, ndims, dims, values, nulls,
								  pos, elem);
	}
	appendStringInfoChar(buf, ']');
}

static void
json_append_array(StringInfo buf, Datum value, JsonTypeInfo *info)
{
	ArrayType  *array = DatumGetArrayTypeP(value);
	int			ndims = ARR_NDIM(array);
	Datum	   *values;
	bool	   *nulls;
	int			nitems;
	int			pos = 0;

	if (ndims == 0 || ArrayGetNItems(ndims, ARR_DIMS(array)) == 0)
	{
		appendBinaryStringInfo(buf, "[]", 2);
		return;
	}

	deconstruct_array(array, ARR_ELEMTYPE(array), info->elmlen,
					  info->elmbyval, info->elmalign, &values, &nulls, &nitems);
	json_append_array_dim(buf, 0, ndims, ARR_DIMS(array), values, nulls, &pos,
						  info->elem);
	pfree(values);
	pfree(nulls);
}

static void
json_append_composite(StringInfo buf, Datum value, JsonTypeInfo *info)
{
	HeapTupleHeader td = DatumGetHeapTupleHeader(value);
	TupleDesc	tupdesc;
	HeapTupleData tuple;
	bool		first = true;

	tupdesc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(td),
									 HeapTupleHeaderGetTypMod(td));

	/* (re)size the field infos when the row type has changed */
	if (info->fields == NULL || info->nfields != tupdesc->natts)
	{
		info->fields = MemoryContextAllocZero(info->cxt,
											  sizeof(JsonTypeInfo *) * tupdesc->natts);
		info->nfields = tupdesc->natts;
	}

	tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = td;

	appendStringInfoChar(buf, '{');
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		Datum		field;
		bool		isnull;

		if (att->attisdropped)
			continue;

		if (info->fields[i] == NULL || info->fields[i]->srctypid != att->atttypid)
			info->fields[i] = json_type_info(att->atttypid, info->cxt);

		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		escape_json(buf, NameStr(att->attname));
		appendStringInfoChar(buf, ':');
		field = heap_getattr(&tuple, i + 1, tupdesc, &isnull);
		json_append_value(buf, field, isnull, info->fields[i]);
	}
	appendStringInfoChar(buf, '}');

	ReleaseTupleDesc(tupdesc);
}
