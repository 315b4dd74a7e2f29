/*-------------------------------------------------------------------------
 *
 * watch.h
 *	  notifier.watch(), notifier.unwatch() and reading notify_change
 *	  triggers from the catalog.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WATCH_H
#define NOTIFIER_WATCH_H

extern void trigger_catalog_lookup(Oid tgoid, Oid *relid, Oid *parentid,
								   int *nargs, char ***args);

#endif							/* NOTIFIER_WATCH_H */
