/*-------------------------------------------------------------------------
 *
 * database_list.c
 *	  pg_notifier.databases: '*' (every database where the extension is
 *	  installed) or a list of database names.  Read by the GUC's check
 *	  hook, the launcher, the workers and the route functions (which warn
 *	  when no worker can serve their database).
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "nodes/value.h"
#include "utils/varlena.h"

#include "common/database_list.h"
#include "pg_notifier.h"

/* Is a pg_notifier.databases value '*', every database with the extension? */
bool
databases_all(const char *value)
{
	while (isspace((unsigned char) *value))
		value++;
	if (*value++ != '*')
		return false;
	while (isspace((unsigned char) *value))
		value++;
	return *value == '\0';
}

/*
 * Parse a pg_notifier.databases value: '*', or a comma-separated list of
 * database names (identifiers: quote mixed case), duplicates removed.  For
 * '*' the list is empty.
 */
bool
parse_database_list(const char *value, List **dbnames)
{
	char	   *copy = pstrdup(value);
	List	   *names;
	ListCell   *lc;

	*dbnames = NIL;
	if (databases_all(value))
		return true;
	if (!SplitIdentifierString(copy, ',', &names))
		return false;
	foreach(lc, names)
	{
		char	   *name = lfirst(lc);

		if (name[0] == '\0' || strcmp(name, "*") == 0)
			return false;
		if (!list_member(*dbnames, makeString(name)))
			*dbnames = lappend(*dbnames, makeString(name));
	}
	return true;
}

/* Does pg_notifier.databases give database dbname a worker? */
bool
database_has_worker(const char *dbname)
{
	List	   *names;

	if (databases_all(notifier_databases))
		return true;
	return parse_database_list(notifier_databases, &names) &&
		list_member(names, makeString((char *) dbname));
}
