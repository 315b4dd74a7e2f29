/*-------------------------------------------------------------------------
 *
 * webhook_http.c
 *	  The webhook sink of the delivery engine (remote_sink.h): libcurl's
 *	  multi interface inside the worker's loop, one easy handle per request.
 *
 * Everything HTTP is here, and only that: the engine hands over a message
 * (one event, or a batch) and gets back its outcome in the engine's words.
 * That mapping is the webhook's own: 2xx delivered; 408, 425, 429, 5xx,
 * other non-4xx statuses, timeouts and connection errors retried, after
 * the Retry-After of a 429 or 503 when there is one; other 4xx dead at
 * once, and an address refused by pg_notifier.denied_networks too.
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
 * Waiting: the engine waits on the worker's latch and on curl's sockets
 * together (told by curl's socket callbacks), with curl's timer as the
 * timeout, so NOTIFY draining, signals and route changes are served while
 * requests are in flight.  A finished request is handed back to the engine
 * at once (remote_delivery_finished()) and freed.
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
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/denied_networks.h"
#include "pg_notifier.h"
#include "worker/sinks/remote_sink.h"
#include "worker/sinks/webhook_sign.h"

/* one HTTP request: one message of the engine */
typedef struct Request
{
	dlist_node	node;
	CURL	   *easy;
	RemoteMessage *msg;
	char	   *body;
	struct curl_slist *headers;
	long		retry_after_ms; /* from a Retry-After header; -1: none */
	char		errbuf[CURL_ERROR_SIZE];
	bool		address_denied; /* a connection was refused: denied_networks */
	char		denied_host[46];	/* its address (INET6_ADDRSTRLEN) */
} Request;

static CURLM *multi = NULL;
static MemoryContext http_cxt = NULL;	/* requests, sockets */
static dlist_head running = DLIST_STATIC_INIT(running);
static RemoteSocket *sockets = NULL;	/* curl's, as its callbacks say */
static int	nsockets = 0;
static int	maxsockets = 0;
static bool sockets_changed = false;	/* one added or removed since asked */
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
		{
			sockets[i] = sockets[--nsockets];
			sockets_changed = true;
		}
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == maxsockets)
		{
			maxsockets = Max(16, maxsockets * 2);
			sockets = sockets == NULL ?
				MemoryContextAlloc(http_cxt, maxsockets * sizeof(RemoteSocket)) :
				repalloc(sockets, maxsockets * sizeof(RemoteSocket));
		}
		nsockets++;
		sockets_changed = true;
	}
	sockets[i].fd = fd;
	sockets[i].readable = (what & CURL_POLL_IN) != 0;
	sockets[i].writable = (what & CURL_POLL_OUT) != 0;
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

static void
request_free(Request *req)
{
	if (req->easy != NULL)
	{
		curl_multi_remove_handle(multi, req->easy);
		curl_easy_cleanup(req->easy);
	}
	curl_slist_free_all(req->headers);
	pfree(req->body);
	pfree(req);
}

/* The extension is gone: forget every request (the engine, its messages). */
static void
webhook_cancel_all(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running)
	{
		dlist_delete(iter.cur);
		request_free(dlist_container(Request, node, iter.cur));
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
 * MaxAllocSize (a StringInfo may not): webhook_message_events() bounds
 * bodies by pg_notifier.max_webhook_body_bytes, but an event larger than that goes
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
 * How many of the n events (n <= batch_size) the next request carries: as
 * many as fit in a body of pg_notifier.max_webhook_body_bytes (a JSON array:
 * brackets and commas), and at least one.
 */
static int
webhook_message_events(char **payloads, int n)
{
	Size		body = 2 + strlen(payloads[0]);
	int			k = 1;

	while (k < n)
	{
		Size		len = 1 + strlen(payloads[k]);

		if (body + len > (Size) notifier_max_webhook_body_bytes)
			break;
		body += len;
		k++;
	}
	return k;
}

static Size
webhook_max_message_bytes(void)
{
	return (Size) notifier_max_webhook_body_bytes;
}

/*
 * Start the request of a message; temporaries are made in the caller's
 * memory context.
 */
static void
webhook_start(Route *route, RemoteMessage *msg, char **event_ids, char **payloads)
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
	req->msg = msg;
	req->retry_after_ms = -1;

	req->body = request_body(route->remote.batch_size == 1, payloads, msg->n, &bodylen);

	msg_id = event_ids[0] != NULL ? event_ids[0] :
		psprintf("delivery-" INT64_FORMAT, msg->ids[0]);
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
		request_free(req);
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
		request_free(req);
		elog(ERROR, "curl_multi_add_handle failed");
	}
	dlist_push_tail(&running, &req->node);
}

/*
 * The outcome of a finished request, in the engine's words, with the
 * reason when it was not delivered.
 */
static void
request_outcome(Request *req, CURLcode result, long status, RemoteMessage *msg)
{
	msg->status = result == CURLE_OK ? (int) status : 0;
	msg->retry_after_ms = -1;
	msg->gone = false;
	if (result != CURLE_OK && req->address_denied)
	{
		/* pg_notifier.denied_networks: retrying cannot help */
		msg->result = REMOTE_DEAD;
		msg->reason = psprintf("address denied: %s is in pg_notifier.denied_networks",
							   req->denied_host);
		msg->summary = "address denied";
		return;
	}
	if (result != CURLE_OK)
	{
		msg->result = REMOTE_RETRY;
		msg->reason = psprintf("%s%s%s", curl_easy_strerror(result),
							   req->errbuf[0] ? ": " : "", req->errbuf);
		/* curl's text of the error code alone: its buffer names the host */
		msg->summary = curl_easy_strerror(result);
		return;
	}
	if (status >= 200 && status < 300)
	{
		msg->result = REMOTE_DELIVERED;
		msg->reason = NULL;
		msg->summary = NULL;
		return;
	}
	if (status >= 400 && status < 500 && status != 408 && status != 425 && status != 429)
		msg->result = REMOTE_DEAD;
	else
	{
		msg->result = REMOTE_RETRY;
		if (status == 429 || status == 503)
			msg->retry_after_ms = req->retry_after_ms;
	}
	msg->reason = psprintf("HTTP status %ld", status);
	msg->gone = status == 410;
	msg->summary = msg->gone ? "the endpoint answered HTTP status 410 Gone" : msg->reason;
}

/* Hand what curl has finished back to the engine. */
static void
collect_finished(void)
{
	CURLMsg    *cmsg;
	int			left;

	while ((cmsg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Request    *req;
		RemoteMessage *msg;
		long		status = 0;
		MemoryContext old;

		if (cmsg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(cmsg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		curl_easy_getinfo(cmsg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		msg = req->msg;
		msg->finished_at = GetCurrentTimestamp();
		/* the reason lives as long as the message */
		old = MemoryContextSwitchTo(GetMemoryChunkContext(msg));
		request_outcome(req, cmsg->data.result, status, msg);
		MemoryContextSwitchTo(old);
		dlist_delete(&req->node);
		request_free(req);
		remote_delivery_finished(msg);
	}
}

/* Let curl start what was just added, and collect what finished at once. */
static void
webhook_progress(void)
{
	int			still_running;

	if (dlist_is_empty(&running))
		return;
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	collect_finished();
}

static int
webhook_sockets(const RemoteSocket **socks, TimestampTz *deadline, bool *changed)
{
	*socks = sockets;
	*deadline = curl_deadline;
	*changed = sockets_changed;
	sockets_changed = false;
	return nsockets;
}

/* curl's sockets are ready, or its timer may have come due */
static void
webhook_ready(const RemoteSocket *ready, int nready)
{
	int			still_running;

	if (multi == NULL)
		return;
	for (int i = 0; i < nready; i++)
		curl_multi_socket_action(multi, ready[i].fd,
								 (ready[i].readable ? CURL_CSELECT_IN : 0) |
								 (ready[i].writable ? CURL_CSELECT_OUT : 0),
								 &still_running);
	if (curl_deadline != 0 && GetCurrentTimestamp() >= curl_deadline)
	{
		curl_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &still_running);
	}
	collect_finished();
}

const RemoteSink webhook_sink = {
	.message_events = webhook_message_events,
	.max_message_bytes = webhook_max_message_bytes,
	.start = webhook_start,
	.progress = webhook_progress,
	.sockets = webhook_sockets,
	.ready = webhook_ready,
	.cancel_all = webhook_cancel_all,
};
