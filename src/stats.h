/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Counters of pg_notifier, kept in shared memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_STATS_H
#define NOTIFIER_STATS_H

typedef enum CaptureCounter
{
	COUNT_EVENTS_SENT,			/* events handed to NOTIFY */
	COUNT_OVERSIZE_REFERENCED,	/* sent as a reference to notifier.payloads */
	COUNT_OVERSIZE_KEYS,		/* sent as the key-only envelope */
	COUNT_OVERSIZE_SKIPPED,		/* dropped by on_oversize = skip */
	COUNT_NOOP_UPDATES,			/* updates that changed no watched column */
	NUM_CAPTURE_COUNTERS
} CaptureCounter;

extern void stats_request_shmem(void);
extern void stats_count(CaptureCounter counter);

#endif							/* NOTIFIER_STATS_H */
