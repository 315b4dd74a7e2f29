/*-------------------------------------------------------------------------
 *
 * route_transform.c
 *	  What a route's transform must be, checked where it is set
 *	  (api/route_options.c) and again where it runs
 *	  (worker/route_shape.c).
 *
 * notifier.routes.transform holds the function's schema-qualified
 * signature as text, not a regprocedure: pg_upgrade refuses a cluster with
 * a regprocedure column in a table (function OIDs are not kept across it),
 * and a dump restores the function under another OID anyway.  The worker
 * therefore looks the name up at every write, and checks the signature
 * again, since the function may since have been dropped and another made
 * under its name: a function called as jsonb -> jsonb must be one.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "common/route_transform.h"

#define TRANSFORM_HINT "Give a function of one jsonb argument that returns jsonb, such as my_transform(jsonb)."

/*
 * A function (not a procedure, an aggregate or a window function) of one
 * jsonb argument, returning one jsonb; an error otherwise.
 */
void
transform_check_signature(Oid fn)
{
	HeapTuple	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	bool		shape_ok;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn),
				 errhint(TRANSFORM_HINT)));
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	shape_ok = proc->prokind == PROKIND_FUNCTION && !proc->proretset &&
		proc->pronargs == 1 && proc->proargtypes.values[0] == JSONBOID &&
		proc->prorettype == JSONBOID;
	ReleaseSysCache(tuple);
	if (!shape_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("transform %s is not a function from jsonb to jsonb",
						format_procedure(fn)),
				 errdetail("A transform takes one jsonb argument and returns one jsonb value; it is not a procedure, an aggregate or a set-returning function."),
				 errhint(TRANSFORM_HINT)));
}

/*
 * The function a route's transform names (its signature as stored in
 * notifier.routes.transform), checked; an error when there is none.
 */
Oid
transform_lookup(const char *signature, int64 route_id)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		fn;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(signature);
	fcinfo->args[0].isnull = false;
	fn = to_regprocedure(fcinfo);
	if (fcinfo->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("transform %s of route " INT64_FORMAT " does not exist",
						signature, route_id),
				 errhint("Create it again, or set another with notifier.alter_route(" INT64_FORMAT ", transform => ...).",
						 route_id)));
	transform_check_signature(DatumGetObjectId(fn));
	return DatumGetObjectId(fn);
}
