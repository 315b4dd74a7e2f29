/*-------------------------------------------------------------------------
 *
 * owner_switch.h
 *	  Running as another role: a table's owner.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_OWNER_SWITCH_H
#define NOTIFIER_OWNER_SWITCH_H

typedef struct OwnerSwitch
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel; /* GUC nest level, rolled back on restore */
} OwnerSwitch;

extern void become_owner(Oid owner, OwnerSwitch *sw);
extern void become_table_owner(const char *relname, OwnerSwitch *sw);
extern void restore_user(const OwnerSwitch *sw);

#endif							/* NOTIFIER_OWNER_SWITCH_H */
