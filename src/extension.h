/*-------------------------------------------------------------------------
 *
 * extension.h
 *	  The extension's own objects: is it installed, where are its tables,
 *	  and running as their owner.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_EXTENSION_H
#define NOTIFIER_EXTENSION_H

typedef struct OwnerSwitch
{
	Oid			save_userid;
	int			save_sec_context;
} OwnerSwitch;

extern Oid	notifier_extension_oid(void);
extern Oid	notifier_table_oid(const char *relname);
extern void become_table_owner(const char *relname, OwnerSwitch *sw);
extern void restore_user(const OwnerSwitch *sw);

#endif							/* NOTIFIER_EXTENSION_H */
