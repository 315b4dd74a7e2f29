/*-------------------------------------------------------------------------
 *
 * route_options.c
 *	  The options every route has, whatever its sink: filter (jsonpath)
 *	  and transform (regprocedure), given to add_queue() and add_webhook(),
 *	  and changed later with notifier.alter_route().
 *
 * A filter that does not parse never gets here: the jsonpath type's input
 * refuses it.  A transform is checked when it is set, so that a mistake is
 * an error of the call and not a dead letter per event later: it must be a
 * plain function of one jsonb argument returning jsonb, and the caller must
 * have EXECUTE on it.  The caller becomes the route's owner, the role the
 * worker runs the transform as (worker/route_shape.c), which checks again
 * that it may.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/regproc.h"

#include "api/route_options.h"
#include "api/routes_api.h"
#include "common/route_transform.h"
#include "common/sqlutil.h"

/* the arguments of notifier.alter_route() */
#define ALTER_ROUTE_ARG_ID 0
#define ALTER_ROUTE_ARG_FILTER 1
#define ALTER_ROUTE_ARG_TRANSFORM 2
#define ALTER_ROUTE_ARG_RESET 3

/*
 * A transform the caller may set: see common/route_transform.c, and the
 * caller must be allowed to execute it.  Returns what notifier.routes.transform
 * holds: its schema-qualified signature.
 */
static char *
check_transform(Oid fn)
{
	transform_check_signature(fn);
	if (pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(fn)),
				 errdetail("The worker runs a route's transform as the role that sets it, which needs EXECUTE on it.")));
	return format_procedure_qualified(fn);
}

/*
 * The filter and transform arguments of add_queue() or add_webhook(), as
 * values of the columns filter, transform and owner of notifier.routes
 * (values[0..2], nulls[0..2]; types: ROUTE_OPTION_TYPES).  Returns how many
 * values it gave: ROUTE_OPTION_COUNT, or 0 for a call through the SQL
 * definition of 0.1, before ALTER EXTENSION UPDATE (which has neither the
 * arguments nor the columns).  *columns and *params: what the INSERT adds
 * for them, the parameters numbered from first_param on.
 */
int
route_options_args(FunctionCallInfo fcinfo, int filter_argno, int transform_argno,
				   Datum *values, char *nulls, int first_param,
				   const char **columns, const char **params)
{
	*columns = "";
	*params = "";
	if (PG_NARGS() <= transform_argno)
		return 0;
	values[0] = PG_ARGISNULL(filter_argno) ? (Datum) 0 : PG_GETARG_DATUM(filter_argno);
	nulls[0] = PG_ARGISNULL(filter_argno) ? 'n' : ' ';
	values[1] = PG_ARGISNULL(transform_argno) ? (Datum) 0 :
		CStringGetTextDatum(check_transform(PG_GETARG_OID(transform_argno)));
	nulls[1] = PG_ARGISNULL(transform_argno) ? 'n' : ' ';
	values[2] = ObjectIdGetDatum(GetUserId());
	nulls[2] = ' ';
	*columns = ", filter, transform, owner";
	*params = psprintf(", $%d, $%d, $%d", first_param, first_param + 1, first_param + 2);
	return ROUTE_OPTION_COUNT;
}

/* Is name one of the options in reset (a text[] without NULLs)? */
static bool
reset_names(List *reset, const char *name)
{
	ListCell   *lc;

	foreach(lc, reset)
	{
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	}
	return false;
}

PG_FUNCTION_INFO_V1(notifier_alter_route);

/*
 * notifier.alter_route(route_id bigint, filter jsonpath, transform
 *						regprocedure, reset text[])
 *
 * Sets the options given (not NULL) and removes those named in reset, like
 * ALTER ... SET and RESET.  Setting a transform makes the caller the
 * route's owner.  Events already written for the route stay as they are.
 */
Datum
notifier_alter_route(PG_FUNCTION_ARGS)
{
	static const char *const options[] = {"filter", "transform"};
	static const int option_args[] = {ALTER_ROUTE_ARG_FILTER, ALTER_ROUTE_ARG_TRANSFORM};
	Oid			argtypes[6] = {INT8OID, BOOLOID, JSONPATHOID, BOOLOID, TEXTOID, REGROLEOID};
	Datum		values[6];
	char		nulls[6] = "      ";
	List	   *reset = NIL;
	bool		change = false;
	ListCell   *lc;

	require_arg(fcinfo, ALTER_ROUTE_ARG_ID, "route_id", "See notifier.route_list for the routes.");
	if (!PG_ARGISNULL(ALTER_ROUTE_ARG_RESET))
		reset = text_array_to_list(PG_GETARG_ARRAYTYPE_P(ALTER_ROUTE_ARG_RESET), "reset");
	foreach(lc, reset)
	{
		if (strcmp(lfirst(lc), "filter") != 0 && strcmp(lfirst(lc), "transform") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized route option \"%s\" in reset",
							clip_for_message(lfirst(lc))),
					 errhint("The options alter_route() resets are \"filter\" and \"transform\".")));
	}

	values[0] = PG_GETARG_DATUM(ALTER_ROUTE_ARG_ID);
	for (int i = 0; i < lengthof(options); i++)
	{
		int			argno = option_args[i];
		bool		set = !PG_ARGISNULL(argno);
		bool		unset = reset_names(reset, options[i]);

		if (set && unset)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" is both set and reset", options[i]),
					 errhint("Give either %s => ... or reset => ARRAY['%s'].",
							 options[i], options[i])));
		values[1 + 2 * i] = BoolGetDatum(set || unset);
		values[2 + 2 * i] = set ? PG_GETARG_DATUM(argno) : (Datum) 0;
		nulls[2 + 2 * i] = set ? ' ' : 'n';
		change |= set || unset;
	}
	if (!change)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("alter_route() was given nothing to change"),
				 errhint("Give filter => ..., transform => ..., or reset => ARRAY['filter', 'transform'].")));
	/* the transform is stored as its signature */
	if (!PG_ARGISNULL(ALTER_ROUTE_ARG_TRANSFORM))
		values[4] = CStringGetTextDatum(check_transform(PG_GETARG_OID(ALTER_ROUTE_ARG_TRANSFORM)));
	values[5] = ObjectIdGetDatum(GetUserId());

	if (routes_execute("UPDATE notifier.routes SET"
					   " filter = CASE WHEN $2 THEN $3 ELSE filter END,"
					   " transform = CASE WHEN $4 THEN $5 ELSE transform END,"
					   " owner = CASE WHEN $5 IS NOT NULL THEN $6 ELSE owner END"
					   " WHERE id OPERATOR(pg_catalog.=) $1 RETURNING id",
					   6, argtypes, values, nulls, SPI_OK_UPDATE_RETURNING, NULL) == 0)
		route_does_not_exist(PG_GETARG_INT64(ALTER_ROUTE_ARG_ID));
	PG_RETURN_VOID();
}
