/*-------------------------------------------------------------------------
 *
 * pg_notifier.h
 *	  Module-wide definitions of pg_notifier: version, schema, GUCs.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_NOTIFIER_H
#define PG_NOTIFIER_H

#define PG_NOTIFIER_VERSION "0.2"
#define NOTIFIER_SCHEMA "notifier"

/*
 * async.c refuses a NOTIFY payload whose length is NOTIFY_PAYLOAD_MAX_LENGTH
 * or more; that constant is private to async.c, so it is repeated here.
 */
#define NOTIFIER_NOTIFY_LIMIT (BLCKSZ - NAMEDATALEN - 128)

/* the smallest pg_notifier.max_payload_bytes: room for any envelope */
#define NOTIFIER_MIN_PAYLOAD_BYTES 1024

/* the channel on which the worker hears of route changes */
#define NOTIFIER_CONTROL_CHANNEL "pg_notifier_control"

/* the search_path of every query run as another role, and of the worker */
#define NOTIFIER_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/* the most databases pg_notifier.databases can name */
#define NOTIFIER_MAX_DATABASES 64

/*
 * The largest pg_notifier.max_batch_bytes and max_webhook_body_bytes: a
 * batch and the array or body built of it stay well below MaxAllocSize.
 */
#define NOTIFIER_MAX_BATCH_BYTES (256 * 1024 * 1024)

/* GUCs */
extern int	notifier_max_payload_bytes;
extern int	notifier_max_coalesce_events;
extern char *notifier_databases;
extern char *notifier_role;
extern int	notifier_payload_retention;
extern char *notifier_allowed_hosts;
extern char *notifier_denied_networks;
extern int	notifier_retry_base_ms;
extern int	notifier_retry_max_ms;
extern int	notifier_retention;
extern int	notifier_max_batch_bytes;
extern int	notifier_max_webhook_body_bytes;

#endif							/* PG_NOTIFIER_H */
