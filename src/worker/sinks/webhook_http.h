/*-------------------------------------------------------------------------
 *
 * webhook_http.h
 *	  The webhook requests: libcurl's multi interface in the worker's loop.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFIER_WEBHOOK_HTTP_H
#define NOTIFIER_WEBHOOK_HTTP_H

#include <curl/curl.h>

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "worker/routes.h"

/* one HTTP request: one or batch_size deliveries */
typedef struct Request
{
	dlist_node	node;
	CURL	   *easy;
	int64		route_id;
	int			max_attempts;
	int			attempt;		/* of the first delivery */
	int			n;
	int64	   *ids;
	TimestampTz *received;
	char	   *body;
	struct curl_slist *headers;
	long		retry_after_ms; /* from a Retry-After header; -1: none */
	char		errbuf[CURL_ERROR_SIZE];
	bool		address_denied; /* a connection was refused: denied_networks */
	char		denied_host[46];	/* its address (INET6_ADDRSTRLEN) */
	CURLcode	result;
	long		http_status;
	TimestampTz finished_at;
} Request;

extern void webhook_http_start(Route *route, int64 *ids, char **event_ids,
							   char **payloads, int *attempts,
							   TimestampTz *received, int n);
extern void webhook_http_progress(void);
extern bool webhook_http_any_finished(void);
extern Request *webhook_http_next_finished(void);
extern void webhook_http_free(Request *req);
extern void webhook_http_cancel_all(void);
extern void webhook_http_wait(long timeout_ms);

#endif							/* NOTIFIER_WEBHOOK_HTTP_H */
