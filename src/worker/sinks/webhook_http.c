/*-------------------------------------------------------------------------
 *
 * webhook_http.c
 *	  The webhook requests: libcurl's multi interface inside the worker's
 *	  loop, one easy handle per request.
 *
 * A request is the POST of one claimed delivery, or of a JSON array of up
 * to batch_size of them, with the Standard Webhooks headers (webhook-id,
 * webhook-timestamp and, for a route with a secret, webhook-signature) and
 * the route's own headers.  Redirects are never followed, and only http and
 * https are spoken.  The response body is not kept; a Retry-After header
 * is.  Every socket is opened by open_socket(), which refuses an address in
 * pg_notifier.denied_networks: the address curl resolved and is about to
 * connect to, however the URL spelled it.
 *
 * Waiting: the worker waits on its latch and on curl's sockets together (a
 * WaitEventSet rebuilt from curl's socket callbacks), with curl's timer as
 * the timeout, so NOTIFY draining, signals and route changes are served
 * while requests are in flight.  What finished waits in a list until
 * webhook_delivery.c records its outcome.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/denied_networks.h"
#include "pg_notifier.h"
#include "worker/sinks/webhook_http.h"
#include "worker/sinks/webhook_sign.h"

typedef struct Socket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
} Socket;

static CURLM *multi = NULL;
static MemoryContext http_cxt = NULL;	/* requests, sockets */
static dlist_head running = DLIST_STATIC_INIT(running);
static dlist_head finished = DLIST_STATIC_INIT(finished);
static Socket *sockets = NULL;
static int	nsockets = 0;
static int	maxsockets = 0;
static TimestampTz curl_deadline = 0;	/* curl's timer; 0: none */
static char *user_agent = NULL;

static int
socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
			sockets[i] = sockets[--nsockets];
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == maxsockets)
		{
			maxsockets = Max(16, maxsockets * 2);
			sockets = sockets == NULL ?
				MemoryContextAlloc(http_cxt, maxsockets * sizeof(Socket)) :
				repalloc(sockets, maxsockets * sizeof(Socket));
		}
		nsockets++;
	}
	sockets[i].fd = fd;
	sockets[i].what = what;
	return 0;
}

static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	curl_deadline = timeout_ms < 0 ? 0 :
		TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static void
http_init(void)
{
	if (multi != NULL)
		return;
	http_cxt = AllocSetContextCreate(TopMemoryContext, "pg_notifier webhook requests",
									 ALLOCSET_DEFAULT_SIZES);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "curl_global_init failed");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "curl_multi_init failed");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_callback);
	user_agent = MemoryContextStrdup(http_cxt, "pg_notifier/" PG_NOTIFIER_VERSION);
}

void
webhook_http_free(Request *req)
{
	if (req->easy != NULL)
	{
		curl_multi_remove_handle(multi, req->easy);
		curl_easy_cleanup(req->easy);
	}
	curl_slist_free_all(req->headers);
	pfree(req->ids);
	pfree(req->received);
	pfree(req->body);
	pfree(req);
}

/* The extension is gone: forget every request, running or finished. */
void
webhook_http_cancel_all(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running)
	{
		dlist_delete(iter.cur);
		webhook_http_free(dlist_container(Request, node, iter.cur));
	}
	dlist_foreach_modify(iter, &finished)
	{
		dlist_delete(iter.cur);
		webhook_http_free(dlist_container(Request, node, iter.cur));
	}
}

/* curl: the response body is not kept */
static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

/*
 * Seconds from now (or before now: negative) in milliseconds, saturated at
 * pg_notifier.retry_max_ms: no wait is longer, and no product overflows.
 */
static long
retry_after_saturated(double secs)
{
	return (long) Max(0.0, Min(secs * 1000.0, (double) notifier_retry_max_ms));
}

/*
 * curl: Retry-After, in seconds or as an HTTP date.  A number of seconds
 * of any size saturates at pg_notifier.retry_max_ms (strtol's overflow of
 * 99999999999999999999 included); a date in the past is no wait; a
 * negative number or anything else is not a Retry-After (RFC 9110), and
 * the usual backoff applies.
 */
static size_t
header_callback(char *buffer, size_t size, size_t nitems, void *userdata)
{
	Request    *req = userdata;
	size_t		len = size * nitems;
	static const char name[] = "retry-after:";

	if (len > sizeof(name) - 1 && pg_strncasecmp(buffer, name, sizeof(name) - 1) == 0)
	{
		char		value[64];
		size_t		vlen = Min(len - (sizeof(name) - 1), sizeof(value) - 1);
		char	   *start = value;
		char	   *end;

		memcpy(value, buffer + sizeof(name) - 1, vlen);
		value[vlen] = '\0';
		while (*start == ' ' || *start == '\t')
			start++;
		end = start;
		while (isdigit((unsigned char) *end))
			end++;
		if (end != start && strspn(end, " \t\r\n") == strlen(end))
		{
			/* digits only: strtod cannot overflow them into garbage */
			req->retry_after_ms = retry_after_saturated(strtod(start, NULL));
		}
		else
		{
			time_t		when = curl_getdate(start, NULL);

			if (when > 0)
				req->retry_after_ms = retry_after_saturated(difftime(when, time(NULL)));
		}
	}
	return len;
}

/*
 * curl: open the socket of a connection, unless its address lies in
 * pg_notifier.denied_networks.  CURL_SOCKET_BAD makes curl try the next
 * address of the name, or fail with CURLE_COULDNT_CONNECT; the request
 * remembers the refusal, and a request that failed so is dead at once.
 */
static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	Request    *req = clientp;

	if (address_denied(&address->addr))
	{
		char		host[INET6_ADDRSTRLEN] = "?";
		const void *bytes = address->family == AF_INET6 ?
		(const void *) &((struct sockaddr_in6 *) &address->addr)->sin6_addr :
		(const void *) &((struct sockaddr_in *) &address->addr)->sin_addr;

		(void) inet_ntop(address->family, bytes, host, sizeof(host));
		strlcpy(req->denied_host, host, sizeof(req->denied_host));
		req->address_denied = true;
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

static struct curl_slist *
append_header(struct curl_slist *list, const char *header)
{
	struct curl_slist *result = curl_slist_append(list, header);

	if (result == NULL)
	{
		curl_slist_free_all(list);
		elog(ERROR, "out of memory");
	}
	return result;
}

/*
 * The body of a request: the event, or the JSON array of the n events of a
 * batch_size route.  Its size is known before it is built and may pass
 * MaxAllocSize (a StringInfo may not): webhook_delivery.c bounds bodies by
 * pg_notifier.max_webhook_body_bytes, but an event larger than that goes
 * alone, and may be up to 1 GB.  In http_cxt.
 */
static char *
request_body(bool single, char **payloads, int n, Size *len)
{
	Size		total = single ? 0 : 2 + (n - 1);
	char	   *body;
	char	   *p;

	Assert(!single || n == 1);
	for (int i = 0; i < n; i++)
		total += strlen(payloads[i]);
	body = p = MemoryContextAllocHuge(http_cxt, total + 1);
	if (!single)
		*p++ = '[';
	for (int i = 0; i < n; i++)
	{
		Size		l = strlen(payloads[i]);

		if (i > 0)
			*p++ = ',';
		memcpy(p, payloads[i], l);
		p += l;
	}
	if (!single)
		*p++ = ']';
	*p = '\0';
	*len = total;
	return body;
}

/*
 * Start the request of n claimed rows of a route; temporaries are made in
 * the caller's memory context.
 */
void
webhook_http_start(Route *route, int64 *ids, char **event_ids, char **payloads,
				   int *attempts, TimestampTz *received, int n)
{
	WebhookConfig *wh = &route->webhook;
	Request    *req;
	Size		bodylen;
	char	   *msg_id;
	int64		now_secs = (int64) time(NULL);
	ListCell   *lc;
	CURL	   *easy;

	http_init();
	req = MemoryContextAllocZero(http_cxt, sizeof(Request));
	req->route_id = route->id;
	req->max_attempts = wh->max_attempts;
	req->attempt = attempts[0];
	req->n = n;
	req->ids = MemoryContextAlloc(http_cxt, n * sizeof(int64));
	req->received = MemoryContextAlloc(http_cxt, n * sizeof(TimestampTz));
	memcpy(req->ids, ids, n * sizeof(int64));
	memcpy(req->received, received, n * sizeof(TimestampTz));
	req->retry_after_ms = -1;

	req->body = request_body(wh->batch_size == 1, payloads, n, &bodylen);

	msg_id = event_ids[0] != NULL ? event_ids[0] : psprintf("delivery-" INT64_FORMAT, ids[0]);
	req->headers = append_header(NULL, "Content-Type: application/json");
	foreach(lc, wh->headers)
		req->headers = append_header(req->headers, lfirst(lc));
	req->headers = append_header(req->headers, psprintf("webhook-id: %s", msg_id));
	req->headers = append_header(req->headers,
								 psprintf("webhook-timestamp: " INT64_FORMAT, now_secs));
	if (wh->key != NULL)
	{
		char	   *sig = webhook_signature(wh->key, wh->keylen, msg_id,
											now_secs, req->body, bodylen);

		/* during a rotation, the previous secret's signature too, after */
		if (wh->previous_key != NULL && GetCurrentTimestamp() < wh->previous_until)
			sig = psprintf("%s %s", sig,
						   webhook_signature(wh->previous_key, wh->previous_keylen,
											 msg_id, now_secs, req->body, bodylen));
		req->headers = append_header(req->headers,
									 psprintf("webhook-signature: %s", sig));
	}
	/* no "Expect: 100-continue" round trip for large bodies */
	req->headers = append_header(req->headers, "Expect:");

	easy = curl_easy_init();
	if (easy == NULL)
	{
		webhook_http_free(req);
		elog(ERROR, "curl_easy_init failed");
	}
	req->easy = easy;
	curl_easy_setopt(easy, CURLOPT_URL, wh->url);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) bodylen);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, user_agent);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) wh->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(wh->timeout_ms, 10000));
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_callback);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
	{
		webhook_http_free(req);
		elog(ERROR, "curl_multi_add_handle failed");
	}
	dlist_push_tail(&running, &req->node);
}

/* Move what curl has finished to the finished list. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Request    *req;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &req->http_status);
		req->finished_at = GetCurrentTimestamp();
		curl_multi_remove_handle(multi, req->easy);
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
		dlist_delete(&req->node);
		dlist_push_tail(&finished, &req->node);
	}
}

/* Let curl start what was just added, and collect what finished at once. */
void
webhook_http_progress(void)
{
	int			still_running;

	if (dlist_is_empty(&running))
		return;
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	collect_finished();
}

bool
webhook_http_any_finished(void)
{
	return !dlist_is_empty(&finished);
}

/* The oldest finished request, taken off the list; NULL when none is. */
Request *
webhook_http_next_finished(void)
{
	Request    *req;

	if (dlist_is_empty(&finished))
		return NULL;
	req = dlist_container(Request, node, dlist_pop_head_node(&finished));
	return req;
}

/*
 * Sleep until the latch is set, curl has something to do, or timeout_ms
 * passed.
 */
void
webhook_http_wait(long timeout_ms)
{
	WaitEventSet *set;
	WaitEvent  *events;
	int			nevents;
	int			still_running;
	Socket	   *ready;
	int			nready = 0;

	if (multi == NULL || (nsockets == 0 && curl_deadline == 0))
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		return;
	}

	if (curl_deadline != 0)
	{
		long		curl_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
															  curl_deadline);

		timeout_ms = Min(timeout_ms, curl_ms);
	}

#if PG_VERSION_NUM >= 170000
	set = CreateWaitEventSet(NULL, nsockets + 2);
#else
	set = CreateWaitEventSet(CurrentMemoryContext, nsockets + 2);
#endif
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsockets; i++)
	{
		uint32		ev = 0;

		if (sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev != 0)
			AddWaitEventToSet(set, ev, sockets[i].fd, NULL, NULL);
	}
	events = palloc((nsockets + 2) * sizeof(WaitEvent));
	ready = palloc((nsockets + 2) * sizeof(Socket));
	nevents = WaitEventSetWait(set, Max(timeout_ms, 0), events, nsockets + 2,
							   PG_WAIT_EXTENSION);
	for (int i = 0; i < nevents; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			ready[nready].fd = events[i].fd;
			ready[nready].what =
				((events[i].events & WL_SOCKET_READABLE) ? CURL_CSELECT_IN : 0) |
				((events[i].events & WL_SOCKET_WRITEABLE) ? CURL_CSELECT_OUT : 0);
			nready++;
		}
	}
	FreeWaitEventSet(set);

	for (int i = 0; i < nready; i++)
		curl_multi_socket_action(multi, ready[i].fd, ready[i].what, &still_running);
	if (curl_deadline != 0 && GetCurrentTimestamp() >= curl_deadline)
	{
		curl_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	}
	pfree(events);
	pfree(ready);
	collect_finished();
}
