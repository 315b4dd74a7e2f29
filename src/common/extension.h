/*-------------------------------------------------------------------------
 *
 * extension.h
 *	  The extension's own objects: is it installed, where are its tables,
 *	  running as their owner, and the plans of its queries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_EXTENSION_H
#define NOTIFIER_EXTENSION_H

#include "executor/spi.h"

typedef struct OwnerSwitch
{
	Oid			save_userid;
	int			save_sec_context;
} OwnerSwitch;

extern Oid	notifier_extension_oid(void);
extern Oid	notifier_table_oid(const char *relname);
extern void become_table_owner(const char *relname, OwnerSwitch *sw);
extern void restore_user(const OwnerSwitch *sw);
extern SPIPlanPtr keep_plan(SPIPlanPtr *plan, const char *sql, int nargs,
							Oid *argtypes);

#endif							/* NOTIFIER_EXTENSION_H */
