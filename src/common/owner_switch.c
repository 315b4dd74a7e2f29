/*-------------------------------------------------------------------------
 *
 * owner_switch.c
 *	  Running as another role, for as long as a write on its behalf takes.
 *
 * Two kinds of writes run as another role.  The extension's own tables
 * (notifier.payloads, notifier.routes) are written on behalf of roles that
 * have no privilege on them (PUBLIC has none): as their owner, the role
 * that created the extension.  The worker, a superuser, writes into queue
 * tables that other roles own: as the owner of the queue table, so that
 * triggers on it never run with the worker's rights.  Both run in a
 * security-restricted operation.
 *
 * And both run inside a GUC nest level of their own, rolled back when the
 * role is restored, with search_path = pg_catalog, pg_temp, as PostgreSQL
 * does around index builds and REFRESH MATERIALIZED VIEW: what the other
 * role's code sets (a trigger calling set_config('search_path', ...,
 * false)) must not outlive the switch, or the next query of the session --
 * the worker's, as a superuser -- would run with it.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "common/extension.h"
#include "common/owner_switch.h"
#include "pg_notifier.h"

/*
 * Run as owner until restore_user(); an error in between aborts the
 * (sub)transaction, which restores the user and rolls the GUC nest level
 * back as well.
 */
void
become_owner(Oid owner, OwnerSwitch *sw)
{
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	SetUserIdAndSecContext(owner, sw->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	sw->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", NOTIFIER_SAFE_SEARCH_PATH, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/* Run as the owner of notifier.<relname>. */
void
become_table_owner(const char *relname, OwnerSwitch *sw)
{
	Oid			relid = notifier_table_oid(relname);
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	become_owner(owner, sw);
}

void
restore_user(const OwnerSwitch *sw)
{
	AtEOXact_GUC(false, sw->save_nestlevel);
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
}
