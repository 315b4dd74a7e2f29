/*-------------------------------------------------------------------------
 *
 * payloads.h
 *	  notifier.payloads: where oversize events are kept.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_PAYLOADS_H
#define NOTIFIER_PAYLOADS_H

extern int64 payload_store(const char *event);

#endif							/* NOTIFIER_PAYLOADS_H */
