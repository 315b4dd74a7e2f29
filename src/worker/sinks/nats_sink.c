/*-------------------------------------------------------------------------
 *
 * nats_sink.c
 *	  The NATS JetStream sink of the delivery engine (remote_sink.h):
 *	  libnats, one connection per route, asynchronous publishes with
 *	  PubAcks, many in flight.
 *
 * Each event is published on its own to the route's subject template
 * filled in with the event's channel, schema, table and op
 * (common/nats_subject.c), with the headers Nats-Msg-Id (the event's id:
 * JetStream drops a repeat inside the stream's duplicate window, so the
 * engine's retries and a resend after a crash are exactly once there),
 * pg-notifier-channel, pg-notifier-op and the route's own, and is stored
 * when JetStream acknowledges it (PubAck).
 *
 * A message of the engine carries up to batch_size (100; 1 for a route
 * ordered by route) consecutive events of one schema, table and op (one
 * subject), published one after the other without waiting: the engine's
 * bookkeeping (claim, outcome) is paid once per message, not per event,
 * which is what bounds throughput.  The message is delivered when every
 * event's PubAck came, and retried as a whole otherwise: its events that
 * were stored already are dropped by JetStream as duplicates.
 *
 * Outcomes, in the engine's words:
 * - a PubAck (a duplicate's too): delivered;
 * - no responders (no stream captures the subject), no PubAck within
 *	 timeout_ms (a server down, a lost connection, a leader election), an
 *	 error from JetStream, a full reconnect buffer: retried with the
 *	 engine's backoff, dead after max_attempts, with that reason;
 *	 reconnecting is the client's (forever, every half second);
 * - the server refused the credentials, a TLS or credentials file cannot
 *	 be loaded, an event larger than the server's max_payload, an address
 *	 in pg_notifier.denied_networks: dead at once, with the reason.
 *
 * Threads.  libnats does its I/O and calls back on threads of its own,
 * which must never call into PostgreSQL (no palloc, no elog, no latch): the
 * PubAck callback only moves its message, a Pub allocated by the worker,
 * from its connection's in-flight table to the list of finished ones,
 * under a pthread mutex, and writes a byte into a pipe.  The read end of
 * the pipe is the sink's one socket (sockets()): the engine's wait wakes up
 * on it like on curl's sockets, and progress() / ready() hand the finished
 * messages to the engine, in the worker's thread.  (PostgreSQL 15's
 * SetLatch() would probably work from a foreign thread, as it only sets a
 * flag and sends SIGURG or a self-pipe byte, but that is not promised.)
 * Every Pub is finished exactly once: whoever takes it out of the in-flight
 * table under the mutex finishes it.  Threads libnats starts never take
 * the server's signals: they are started with every signal blocked.
 *
 * SSRF guard: the worker resolves the hosts of the route's URLs itself,
 * refuses every address in pg_notifier.denied_networks, and gives libnats
 * the remaining addresses as IP literals (the host name still checks the
 * TLS certificate), with the servers a cluster announces ignored: libnats
 * never connects to an address that was not checked.  A route none of
 * whose addresses is allowed has its messages dead with "address denied".
 * Names are resolved again when a connection is made again: after a route
 * change, a failure to connect, or ten minutes unused.
 *
 * Connection state (connected, reconnecting, disconnected, closed) and its
 * changes go to the route's last_error in notifier.stats, with the reason.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <nats/nats.h>

#include "common/hashfn.h"
#include "common/denied_networks.h"
#include "common/nats_subject.h"
#include "common/stats.h"
#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker/sinks/remote_sink.h"

/*
 * The largest message the servers take by default (max_payload, headers
 * included), and the largest event that shares a message of the engine
 * with others: headers have room below the limit.
 */
#define NATS_DEFAULT_MAX_PAYLOAD (1024 * 1024)
#define NATS_SHARED_EVENT_BYTES (NATS_DEFAULT_MAX_PAYLOAD - 64 * 1024)

/* a connection unused this long is closed */
#define CONN_IDLE_MS (10 * 60 * 1000)

/*
 * After a failure to connect, connect again no sooner than this: a refused
 * connection, or one whose credentials or address are refused (its
 * messages dead meanwhile).  Connecting is synchronous (so that a refused
 * credential is told from a server down), bounded by the route's
 * timeout_ms and CONNECT_TIMEOUT_MS.
 */
#define CONNECT_RETRY_MS 500
#define DEAD_RETRY_MS 5000
#define CONNECT_TIMEOUT_MS 2000

#define REASON_LEN 256

typedef enum ConnState
{
	CONN_CONNECTING,
	CONN_CONNECTED,
	CONN_RECONNECTING,
	CONN_DISCONNECTED,
	CONN_CLOSED
} ConnState;

static const char *const state_names[] = {
	"connecting", "connected", "reconnecting", "disconnected", "closed"
};

struct Conn;

/*
 * One message of the engine: its events' publishes.  Finished when the
 * last of them is (pending 0), with the worst outcome among them.
 */
typedef struct Pub
{
	struct Pub *next;			/* in the finished list */
	RemoteMessage *msg;
	struct Conn *conn;
	uint64		generation;		/* of conn when started */
	/* under sink_mu */
	int			pending;		/* publishes without an outcome, + 1 while
								 * nats_start() publishes */
	RemoteResult result;		/* the worst so far; DELIVERED at first */
	char		reason[REASON_LEN]; /* of the first worst one */
} Pub;

/* an entry of a connection's in-flight table: one publish */
typedef struct Slot
{
	natsMsg    *nmsg;			/* NULL: free */
	Pub		   *pub;
} Slot;

/*
 * A route's connection.  Never freed while the worker runs (a late libnats
 * callback may still hold it): a closed one is kept for reuse.
 */
typedef struct Conn
{
	dlist_node	node;
	int64		route_id;
	char	   *config;			/* what it was made from; in conn_cxt */
	natsConnection *nc;
	jsCtx	   *js;
	bool		threads_started;	/* the PubAck thread exists */
	uint64		generation;		/* one more each time it is closed */
	int			inflight;		/* its Pubs not yet handed back */
	TimestampTz last_used;
	TimestampTz failed_at;		/* fail_reason set then */
	RemoteResult fail_result;	/* with fail_reason: every message ends so */
	char		fail_reason[REASON_LEN];	/* non-empty: no connection */

	/* under sink_mu */
	Slot	   *slots;			/* open addressing by natsMsg pointer */
	int			nslots;			/* a power of two, > 2 * publishes in flight */
	ConnState	state;
	ConnState	reported_state;
	char		last_error[REASON_LEN];
} Conn;

static MemoryContext nats_cxt = NULL;
static dlist_head conns = DLIST_STATIC_INIT(conns);
static dlist_head spare_conns = DLIST_STATIC_INIT(spare_conns);
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static Pub *finished_head = NULL;	/* under sink_mu */
static Pub *finished_tail = NULL;
static bool wake_sent = false;	/* under sink_mu: a byte is in the pipe */
static int	wake_pipe[2] = {-1, -1};
static RemoteSocket wake_socket;
static bool wake_socket_reported = false;

/* ---- the in-flight table (under sink_mu) ---- */

static uint32
slot_of(Conn *conn, natsMsg *nmsg)
{
	uint64		h = (uint64) (uintptr_t) nmsg;

	return (uint32) (hash_bytes_uint32((uint32) (h ^ (h >> 32)))) & (conn->nslots - 1);
}

static void
table_insert(Conn *conn, natsMsg *nmsg, Pub *pub)
{
	uint32		i = slot_of(conn, nmsg);

	while (conn->slots[i].nmsg != NULL)
		i = (i + 1) & (conn->nslots - 1);
	conn->slots[i].nmsg = nmsg;
	conn->slots[i].pub = pub;
}

/* take the publish of nmsg out of the table (backward-shift deletion) */
static Pub *
table_remove(Conn *conn, natsMsg *nmsg)
{
	uint32		mask = conn->nslots - 1;
	uint32		i;
	Pub		   *pub;

	if (conn->slots == NULL)
		return NULL;
	for (i = slot_of(conn, nmsg); conn->slots[i].nmsg != NULL; i = (i + 1) & mask)
		if (conn->slots[i].nmsg == nmsg)
			break;
	if (conn->slots[i].nmsg == NULL)
		return NULL;
	pub = conn->slots[i].pub;
	conn->slots[i].nmsg = NULL;
	for (uint32 j = (i + 1) & mask; conn->slots[j].nmsg != NULL; j = (j + 1) & mask)
	{
		uint32		home = slot_of(conn, conn->slots[j].nmsg);

		/* move j back to i when its home is not cyclically in (i, j] */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)))
		{
			conn->slots[i] = conn->slots[j];
			conn->slots[j].nmsg = NULL;
			i = j;
		}
	}
	return pub;
}

/* under sink_mu: pub is finished; wake the worker */
static void
push_finished(Pub *pub)
{
	pub->next = NULL;
	if (finished_tail != NULL)
		finished_tail->next = pub;
	else
		finished_head = pub;
	finished_tail = pub;
	if (!wake_sent && wake_pipe[1] >= 0)
	{
		wake_sent = true;
		if (write(wake_pipe[1], "x", 1) < 0)
			wake_sent = false;	/* full: a byte is there anyway */
	}
}

static void copy_reason(char *dst, const char *src);

/*
 * Under sink_mu: one publish of pub ended so (reason: NULL when
 * delivered); pub is finished with its last one.  DEAD is worse than
 * RETRY, which is worse than DELIVERED; the first reason of the worst
 * outcome is kept.
 */
static void
publish_done(Pub *pub, RemoteResult result, const char *reason)
{
	if (result > pub->result)
	{
		pub->result = result;
		copy_reason(pub->reason, reason);
	}
	if (--pub->pending == 0)
		push_finished(pub);
}

/*
 * Under sink_mu: every publish the connection has in flight is finished
 * now, to be retried; a PubAck that comes later finds nothing.
 */
static void
retry_inflight(Conn *conn, const char *reason)
{
	for (int i = 0; i < conn->nslots; i++)
	{
		if (conn->slots[i].nmsg == NULL)
			continue;
		conn->slots[i].nmsg = NULL;
		publish_done(conn->slots[i].pub, REMOTE_RETRY, reason);
	}
}

/* ---- libnats' threads: no PostgreSQL in here ---- */

static void
copy_reason(char *dst, const char *src)
{
	strncpy(dst, src, REASON_LEN - 1);
	dst[REASON_LEN - 1] = '\0';
}

static void
ack_handler(jsCtx *js, natsMsg *nmsg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	Conn	   *conn = closure;
	Pub		   *pub;
	char		reason[REASON_LEN];

	pthread_mutex_lock(&sink_mu);
	pub = table_remove(conn, nmsg);
	if (pub != NULL)
	{
		if (pae == NULL)
			publish_done(pub, REMOTE_DELIVERED, NULL);
		else
		{
			if (pae->Err == NATS_NO_RESPONDERS)
				snprintf(reason, REASON_LEN, "no stream captures subject \"%s\" (no responders)",
						 natsMsg_GetSubject(nmsg));
			else if (pae->Err == NATS_TIMEOUT)
				snprintf(reason, REASON_LEN, "no PubAck in time (connection %s%s%s)",
						 state_names[conn->state], conn->last_error[0] ? ": " : "",
						 conn->last_error);
			else
				snprintf(reason, REASON_LEN, "JetStream error %d: %s",
						 (int) pae->ErrCode, pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
			publish_done(pub, REMOTE_RETRY, reason);
		}
	}
	pthread_mutex_unlock(&sink_mu);
	natsMsg_Destroy(nmsg);
}

static void
set_state(natsConnection *nc, Conn *conn, ConnState state)
{
	const char *err = NULL;

	pthread_mutex_lock(&sink_mu);
	conn->state = state;
	if (natsConnection_GetLastError(nc, &err) != NATS_OK && err != NULL && err[0])
		copy_reason(conn->last_error, err);
	/* wake the worker: it reports the change */
	if (!wake_sent && wake_pipe[1] >= 0)
	{
		wake_sent = true;
		if (write(wake_pipe[1], "x", 1) < 0)
			wake_sent = false;
	}
	pthread_mutex_unlock(&sink_mu);
}

static void
connected_cb(natsConnection *nc, void *closure)
{
	set_state(nc, closure, CONN_CONNECTED);
}

static void
disconnected_cb(natsConnection *nc, void *closure)
{
	set_state(nc, closure, CONN_RECONNECTING);
}

static void
closed_cb(natsConnection *nc, void *closure)
{
	set_state(nc, closure, CONN_CLOSED);
}

static void
error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	Conn	   *conn = closure;

	pthread_mutex_lock(&sink_mu);
	copy_reason(conn->last_error, natsStatus_GetText(err));
	pthread_mutex_unlock(&sink_mu);
}

/* ---- the worker's thread ---- */

static natsStatus with_signals_blocked(natsStatus (*fn) (void *), void *arg);

static natsStatus
open_library(void *arg)
{
	return nats_Open(-1);
}

/*
 * The sink's pipe, and libnats' own threads (timers, callbacks), started
 * with every signal blocked.
 */
static void
sink_init(void)
{
	natsStatus	s;

	if (nats_cxt != NULL)
		return;
	if (pipe(wake_pipe) != 0 ||
		fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[0], F_SETFD, FD_CLOEXEC) != 0 ||
		fcntl(wake_pipe[1], F_SETFD, FD_CLOEXEC) != 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create the pipe of the NATS sink: %m")));
	s = with_signals_blocked(open_library, NULL);
	if (s != NATS_OK)
	{
		close(wake_pipe[0]);
		close(wake_pipe[1]);
		wake_pipe[0] = wake_pipe[1] = -1;
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize the NATS client library: %s",
						natsStatus_GetText(s))));
	}
	wake_socket.fd = wake_pipe[0];
	wake_socket.readable = true;
	wake_socket.writable = false;
	nats_cxt = AllocSetContextCreate(TopMemoryContext, "pg_notifier nats",
									 ALLOCSET_DEFAULT_SIZES);
}

/*
 * Threads libnats starts from inside fn inherit a mask with every signal
 * blocked: the server's signals go to the worker's thread only.
 */
static natsStatus
with_signals_blocked(natsStatus (*fn) (void *), void *arg)
{
	sigset_t	all;
	sigset_t	old;
	natsStatus	s;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	s = fn(arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return s;
}

/* the configuration a connection is made from, as one string */
static char *
conn_config(Route *route)
{
	NatsConfig *c = &route->nats;

	return psprintf("%s|%s|%s|%s|%s|%s|%s|%s|%d|%d", c->urls,
					c->token ? c->token : "", c->username ? c->username : "",
					c->password ? c->password : "", c->creds_file ? c->creds_file : "",
					c->tls_ca_file ? c->tls_ca_file : "",
					c->tls_cert_file ? c->tls_cert_file : "",
					c->tls_key_file ? c->tls_key_file : "",
					c->timeout_ms, route->remote.concurrency);
}

/*
 * The servers of urls, as URLs of the addresses their hosts resolve to
 * that pg_notifier.denied_networks allows.  *first_host: the host of the
 * first URL (for TLS); *denied: a refused address, when one was.
 */
static List *
resolve_servers(const char *urls, char **first_host, char *denied, size_t deniedlen,
				char *problem, size_t problemlen)
{
	char	   *copy = pstrdup(urls);
	char	   *save = NULL;
	List	   *servers = NIL;

	*first_host = NULL;
	for (char *item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		char	   *scheme_end;
		char	   *host;
		char	   *port = "4222";
		char	   *p;
		struct addrinfo hints = {0};
		struct addrinfo *res = NULL;
		int			rc;

		while (*item == ' ')
			item++;
		for (char *e = item + strlen(item); e > item && (e[-1] == ' ' || e[-1] == '/'); e--)
			e[-1] = '\0';
		scheme_end = strstr(item, "://");
		if (scheme_end == NULL)
			continue;
		*scheme_end = '\0';
		for (char *c = item; *c; c++)
			*c = pg_ascii_tolower((unsigned char) *c);
		host = scheme_end + 3;
		if (*host == '[')
		{
			host++;
			p = strchr(host, ']');
			if (p == NULL)
				continue;
			*p++ = '\0';
		}
		else
			p = host + strcspn(host, ":");
		if (*p == ':')
		{
			*p = '\0';
			port = p + 1;
		}
		if (*first_host == NULL)
			*first_host = pstrdup(host);

		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		rc = getaddrinfo(host, port, &hints, &res);
		if (rc != 0)
		{
			snprintf(problem, problemlen, "could not resolve \"%s\": %s", host, gai_strerror(rc));
			continue;
		}
		for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
		{
			char		addr[INET6_ADDRSTRLEN];
			const void *bytes = ai->ai_family == AF_INET6 ?
			(const void *) &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr :
			(const void *) &((struct sockaddr_in *) ai->ai_addr)->sin_addr;

			if (inet_ntop(ai->ai_family, bytes, addr, sizeof(addr)) == NULL)
				continue;
			if (address_denied(ai->ai_addr))
			{
				strlcpy(denied, addr, deniedlen);
				continue;
			}
			servers = lappend(servers,
							  ai->ai_family == AF_INET6 ?
							  psprintf("%s://[%s]:%s", item, addr, port) :
							  psprintf("%s://%s:%s", item, addr, port));
		}
		freeaddrinfo(res);
	}
	return servers;
}

typedef struct ConnectArgs
{
	natsConnection **nc;
	natsOptions *opts;
} ConnectArgs;

static natsStatus
do_connect(void *arg)
{
	ConnectArgs *a = arg;

	return natsConnection_Connect(a->nc, a->opts);
}

static void conn_fail(Conn *conn, RemoteResult result, const char *fmt,...) pg_attribute_printf(3, 4);

/*
 * There is no connection: every message ends with this result and reason
 * until a new connection is tried, a moment later (conn_of()).
 */
static void
conn_fail(Conn *conn, RemoteResult result, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(conn->fail_reason, REASON_LEN, fmt, ap);
	va_end(ap);
	conn->fail_result = result;
	conn->failed_at = GetCurrentTimestamp();
}

/*
 * Make the connection of a route, synchronously (so that refused
 * credentials are told from a server down); reconnecting, later, is the
 * client's, in the background.
 */
static void
conn_open(Conn *conn, Route *route)
{
	NatsConfig *c = &route->nats;
	natsOptions *opts = NULL;
	natsStatus	s;
	char		denied[INET6_ADDRSTRLEN] = "";
	char		problem[REASON_LEN] = "";
	char	   *host;
	List	   *servers;
	const char **urls;
	int			n = 0;
	ListCell   *lc;
	jsOptions	jo;
	ConnectArgs args;
	bool		tls;

	/* all URLs have one scheme (add_nats()) */
	tls = pg_strncasecmp(c->urls + strspn(c->urls, " "), "tls://", 6) == 0;

	conn->fail_reason[0] = '\0';
	conn->state = CONN_CONNECTING;
	conn->reported_state = CONN_CONNECTING;
	conn->last_error[0] = '\0';

	servers = resolve_servers(c->urls, &host, denied, sizeof(denied), problem, sizeof(problem));
	if (servers == NIL)
	{
		if (denied[0])
			conn_fail(conn, REMOTE_DEAD, "address denied: %s is in pg_notifier.denied_networks", denied);
		else
			conn_fail(conn, REMOTE_RETRY, "%s", problem[0] ? problem : "no server address");
		return;
	}
	urls = palloc(list_length(servers) * sizeof(char *));
	foreach(lc, servers)
		urls[n++] = lfirst(lc);

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, urls, n);
	if (s == NATS_OK)
		s = natsOptions_SetIgnoreDiscoveredServers(opts, true);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, "pg_notifier");
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, Min(c->timeout_ms, CONNECT_TIMEOUT_MS));
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 500);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, disconnected_cb, conn);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, connected_cb, conn);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(opts, closed_cb, conn);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(opts, error_cb, conn);
	if (s == NATS_OK && c->token)
		s = natsOptions_SetToken(opts, c->token);
	if (s == NATS_OK && c->username)
		s = natsOptions_SetUserInfo(opts, c->username, c->password);
	if (s == NATS_OK && c->creds_file)
		s = natsOptions_SetUserCredentialsFromFiles(opts, c->creds_file, NULL);
	if (s == NATS_OK && tls)
	{
		struct in6_addr a6;
		struct in_addr a4;

		s = natsOptions_SetSecure(opts, true);
		if (s == NATS_OK && host != NULL && inet_pton(AF_INET, host, &a4) != 1 &&
			inet_pton(AF_INET6, host, &a6) != 1)
			s = natsOptions_SetExpectedHostname(opts, host);
		if (s == NATS_OK && c->tls_ca_file)
			s = natsOptions_LoadCATrustedCertificates(opts, c->tls_ca_file);
		if (s == NATS_OK && c->tls_cert_file)
			s = natsOptions_LoadCertificatesChain(opts, c->tls_cert_file, c->tls_key_file);
	}
	if (s != NATS_OK)
	{
		/* a file that cannot be loaded: retrying cannot help */
		conn_fail(conn, REMOTE_DEAD, "NATS options: %s", natsStatus_GetText(s));
		natsOptions_Destroy(opts);
		return;
	}

	args.nc = &conn->nc;
	args.opts = opts;
	s = with_signals_blocked(do_connect, &args);
	natsOptions_Destroy(opts);
	if (s != NATS_OK)
	{
		conn->nc = NULL;
		if (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED)
			conn_fail(conn, REMOTE_DEAD, "authorization failed: %s", natsStatus_GetText(s));
		else
			conn_fail(conn, REMOTE_RETRY, "could not connect: %s", natsStatus_GetText(s));
		return;
	}
	if (natsConnection_Status(conn->nc) == NATS_CONN_STATUS_CONNECTED)
	{
		pthread_mutex_lock(&sink_mu);
		conn->state = CONN_CONNECTED;
		pthread_mutex_unlock(&sink_mu);
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.AckHandler = ack_handler;
	jo.PublishAsync.AckHandlerClosure = conn;
	jo.PublishAsync.MaxPending = 0;
	jo.Wait = c->timeout_ms;
	s = natsConnection_JetStream(&conn->js, conn->nc, &jo);
	if (s != NATS_OK)
	{
		conn_fail(conn, REMOTE_RETRY, "could not make a JetStream context: %s", natsStatus_GetText(s));
		natsConnection_Destroy(conn->nc);
		conn->nc = NULL;
	}
}

/*
 * Close a connection.  Its messages in flight are finished now, retried:
 * their late PubAcks find nothing.
 */
static void
conn_close(Conn *conn)
{
	pthread_mutex_lock(&sink_mu);
	retry_inflight(conn, "the connection was closed");
	pthread_mutex_unlock(&sink_mu);
	if (conn->js != NULL)
		jsCtx_Destroy(conn->js);
	if (conn->nc != NULL)
		natsConnection_Destroy(conn->nc);
	conn->js = NULL;
	conn->nc = NULL;
	conn->threads_started = false;
	conn->route_id = 0;
	conn->generation++;
	dlist_delete(&conn->node);
	dlist_push_tail(&spare_conns, &conn->node);
}

/* the connection of a route, made (again) when there is none or it changed */
static Conn *
conn_of(Route *route)
{
	dlist_iter	iter;
	char	   *config = conn_config(route);
	Conn	   *conn = NULL;
	int			nslots;

	dlist_foreach(iter, &conns)
	{
		Conn	   *c = dlist_container(Conn, node, iter.cur);

		if (c->route_id != route->id)
			continue;
		/* no connection: a new one is tried a while later */
		if (strcmp(c->config, config) == 0 &&
			(c->fail_reason[0] == '\0' ||
			 !TimestampDifferenceExceeds(c->failed_at, GetCurrentTimestamp(),
										 c->fail_result == REMOTE_DEAD ? DEAD_RETRY_MS : CONNECT_RETRY_MS)))
			return c;
		conn_close(c);
		break;
	}

	if (!dlist_is_empty(&spare_conns))
	{
		conn = dlist_container(Conn, node, dlist_pop_head_node(&spare_conns));
		pfree(conn->config);
	}
	else
		conn = MemoryContextAllocZero(nats_cxt, sizeof(Conn));
	dlist_push_tail(&conns, &conn->node);
	conn->route_id = route->id;
	conn->config = MemoryContextStrdup(nats_cxt, config);
	conn->inflight = 0;
	conn->last_used = GetCurrentTimestamp();

	/* the table: more than twice the most publishes in flight */
	for (nslots = 16;
		 nslots <= 2 * route->remote.concurrency * route->remote.batch_size;
		 nslots *= 2)
		;
	pthread_mutex_lock(&sink_mu);
	if (conn->nslots < nslots)
	{
		if (conn->slots != NULL)
			pfree(conn->slots);
		conn->slots = MemoryContextAllocZero(nats_cxt, nslots * sizeof(Slot));
		conn->nslots = nslots;
	}
	pthread_mutex_unlock(&sink_mu);

	conn_open(conn, route);
	return conn;
}

static void event_names(const char *payload, char *op, char *schema, char *table, int len);

/*
 * How many of the n events one message carries: the first, and those
 * after it of the same schema, table and op (so the same subject: a stream
 * captures all of a message or none of it), each within the servers'
 * default max_payload (a larger event goes alone: a refusal makes its
 * message dead, and only it).
 */
static int
nats_message_events(char **payloads, int n)
{
	char		op0[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
	char		schema0[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
	char		table0[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
	int			k;

	if (strlen(payloads[0]) > NATS_SHARED_EVENT_BYTES)
		return 1;
	event_names(payloads[0], op0, schema0, table0, sizeof(op0));
	for (k = 1; k < n; k++)
	{
		char		op[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
		char		schema[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
		char		table[NATS_SUBJECT_VALUE_MAX_BYTES + 1];

		if (strlen(payloads[k]) > NATS_SHARED_EVENT_BYTES)
			break;
		event_names(payloads[k], op, schema, table, sizeof(op));
		if (strcmp(op, op0) != 0 || strcmp(schema, schema0) != 0 || strcmp(table, table0) != 0)
			break;
	}
	return k;
}

static Size
nats_max_message_bytes(void)
{
	return NATS_DEFAULT_MAX_PAYLOAD;
}

/*
 * A JSON string value at *p (just after its opening quote), into buf (at
 * most len - 1 bytes; an escaped character becomes '_': only the subject
 * and an op header use it); *p moves past the closing quote.
 */
static bool
scan_string(const char **p, char *buf, int len)
{
	int			n = 0;
	const char *s = *p;

	while (*s && *s != '"')
	{
		char		c = *s++;

		if (c == '\\')
		{
			if (*s == '\0')
				return false;
			c = '_';
			if (*s == 'u')
			{
				for (int i = 0; i < 5 && *s; i++)
					s++;
			}
			else
				s++;
		}
		if (n < len - 1)
			buf[n++] = c;
	}
	if (*s != '"')
		return false;
	buf[n] = '\0';
	*p = s + 1;
	return true;
}

/*
 * The op, schema and table of one of our events, which begin
 * {"id":"...","op":"...","schema":"...","table":"..."; left empty for
 * another payload, or for what it lacks.
 */
static void
event_names(const char *payload, char *op, char *schema, char *table, int len)
{
	static const char *const keys[] = {"id", "op", "schema", "table"};
	char	   *dst[4];
	char		id[64];
	const char *p = payload;

	dst[0] = id;
	dst[1] = op;
	dst[2] = schema;
	dst[3] = table;
	op[0] = schema[0] = table[0] = '\0';
	if (*p++ != '{')
		return;
	for (int k = 0; k < 4; k++)
	{
		char		key[16];

		if (k > 0 && *p++ != ',')
			return;
		if (*p++ != '"' || !scan_string(&p, key, sizeof(key)) || strcmp(key, keys[k]) != 0)
			return;
		if (*p++ != ':' || *p++ != '"')
			return;
		if (!scan_string(&p, dst[k], k == 0 ? (int) sizeof(id) : len))
		{
			dst[k][0] = '\0';
			return;
		}
	}
}

typedef struct PublishArgs
{
	Conn	   *conn;
	natsMsg   **nmsg;
	jsPubOptions *po;
} PublishArgs;

static natsStatus
do_publish(void *arg)
{
	PublishArgs *a = arg;

	return js_PublishMsgAsync(a->conn->js, a->nmsg, a->po);
}

/*
 * Publish one event of pub: asynchronously, its outcome from the PubAck
 * handler; one that cannot be sent is done at once.
 */
static void
publish_event(Route *route, Conn *conn, Pub *pub, const char *event_id, int64 delivery_id,
			  const char *payload)
{
	NatsConfig *c = &route->nats;
	natsMsg    *nmsg = NULL;
	natsMsg    *key;
	natsStatus	s;
	char		op[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
	char		schema[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
	char		table[NATS_SUBJECT_VALUE_MAX_BYTES + 1];
	const char *values[NATS_NUM_PLACEHOLDERS];
	char		reason[REASON_LEN];
	jsPubOptions po;
	ListCell   *lc;
	PublishArgs args;
	bool		mine;

	event_names(payload, op, schema, table, sizeof(op));
	values[NATS_PH_CHANNEL] = route->channel;
	values[NATS_PH_SCHEMA] = schema;
	values[NATS_PH_TABLE] = table;
	values[NATS_PH_OP] = op;

	s = natsMsg_Create(&nmsg, nats_subject_fill(c->subject, values), NULL,
					   payload, (int) strlen(payload));
	if (s == NATS_OK)
		s = natsMsgHeader_Set(nmsg, "pg-notifier-channel", route->channel);
	if (s == NATS_OK && op[0] != '\0')
		s = natsMsgHeader_Set(nmsg, "pg-notifier-op", op);
	foreach(lc, c->headers)
	{
		char	   *header = pstrdup(lfirst(lc));
		char	   *colon = strstr(header, ": ");

		if (s != NATS_OK || colon == NULL)
			continue;
		*colon = '\0';
		s = natsMsgHeader_Add(nmsg, header, colon + 2);
	}
	if (s != NATS_OK)
	{
		natsMsg_Destroy(nmsg);
		pthread_mutex_lock(&sink_mu);
		publish_done(pub, REMOTE_RETRY, natsStatus_GetText(s));
		pthread_mutex_unlock(&sink_mu);
		return;
	}

	jsPubOptions_Init(&po);
	po.MsgId = event_id != NULL ? event_id :
		psprintf("delivery-" INT64_FORMAT, delivery_id);
	po.MaxWait = c->timeout_ms;

	/* in the table first: the PubAck may come before the call returns */
	key = nmsg;
	pthread_mutex_lock(&sink_mu);
	table_insert(conn, key, pub);
	pthread_mutex_unlock(&sink_mu);

	args.conn = conn;
	args.nmsg = &nmsg;
	args.po = &po;
	if (!conn->threads_started)
	{
		s = with_signals_blocked(do_publish, &args);
		conn->threads_started = (s == NATS_OK);
	}
	else
		s = do_publish(&args);
	if (s == NATS_OK)
		return;

	/* not sent: ours to finish, unless a callback already did */
	pthread_mutex_lock(&sink_mu);
	mine = table_remove(conn, key) != NULL;
	if (mine && s == NATS_MAX_PAYLOAD)
		publish_done(pub, REMOTE_DEAD, "the event is larger than the server's max_payload");
	else if (mine)
	{
		snprintf(reason, REASON_LEN, "%s (connection %s%s%s)", natsStatus_GetText(s),
				 state_names[conn->state], conn->last_error[0] ? ": " : "",
				 conn->last_error);
		publish_done(pub, REMOTE_RETRY, reason);
	}
	pthread_mutex_unlock(&sink_mu);
	natsMsg_Destroy(nmsg);
}

/* publish the events of a message, in their order, on the route's connection */
static void
nats_start(Route *route, RemoteMessage *msg, char **event_ids, char **payloads)
{
	Conn	   *conn;
	Pub		   *pub;

	sink_init();
	pub = MemoryContextAllocZero(nats_cxt, sizeof(Pub));
	pub->msg = msg;
	pub->result = REMOTE_DELIVERED;
	pub->pending = msg->n + 1;	/* + 1: not finished while we publish */
	conn = conn_of(route);
	pub->conn = conn;
	conn->last_used = GetCurrentTimestamp();
	pub->generation = conn->generation;
	conn->inflight++;

	if (conn->fail_reason[0] != '\0')
	{
		pthread_mutex_lock(&sink_mu);
		pub->pending = 1;
		publish_done(pub, conn->fail_result, conn->fail_reason);
		pthread_mutex_unlock(&sink_mu);
		return;
	}
	for (int i = 0; i < msg->n; i++)
		publish_event(route, conn, pub, event_ids[i], msg->ids[i], payloads[i]);
	pthread_mutex_lock(&sink_mu);
	publish_done(pub, REMOTE_DELIVERED, NULL);
	pthread_mutex_unlock(&sink_mu);
}

/*
 * The connection is closed (libnats gives up reconnecting when a server
 * refuses the credentials twice): what it has in flight will get no PubAck
 * and is retried now; the next message connects again.  Under sink_mu.
 */
static void
fail_closed(Conn *conn)
{
	conn_fail(conn, REMOTE_RETRY, "connection closed: %s",
			  conn->last_error[0] ? conn->last_error : "by the client");
	retry_inflight(conn, conn->fail_reason);
}

/*
 * The route's connection changed state: say so in notifier.stats (and act
 * on its closing).
 */
static void
report_states(void)
{
	dlist_iter	iter;

	dlist_foreach(iter, &conns)
	{
		Conn	   *conn = dlist_container(Conn, node, iter.cur);
		RouteDelivery rd;
		char		reason[REASON_LEN * 2];
		ConnState	state;

		bool		first;

		pthread_mutex_lock(&sink_mu);
		if (conn->state == CONN_CLOSED && conn->fail_reason[0] == '\0')
			fail_closed(conn);
		/* no connection could be made: disconnected (or closed) */
		state = conn->fail_reason[0] == '\0' ? conn->state :
			conn->state == CONN_CLOSED ? CONN_CLOSED : CONN_DISCONNECTED;
		if (state == conn->reported_state)
		{
			pthread_mutex_unlock(&sink_mu);
			continue;
		}
		first = conn->reported_state == CONN_CONNECTING;
		conn->reported_state = state;
		if (state != CONN_CONNECTED)
			snprintf(reason, sizeof(reason), "nats connection %s: %s", state_names[state],
					 conn->fail_reason[0] ? conn->fail_reason :
					 conn->last_error[0] ? conn->last_error : "no reason given");
		else
			strlcpy(reason, "nats connection connected again", sizeof(reason));
		pthread_mutex_unlock(&sink_mu);

		memset(&rd, 0, sizeof(rd));
		rd.route_id = conn->route_id;
		rd.connection = state_names[state];
		/* the first connection is no news */
		rd.error = state == CONN_CONNECTED && first ? NULL : reason;
		stats_route_delivery(MyDatabaseId, &rd, GetCurrentTimestamp());
	}
}

/* hand what finished to the engine; close what is unused */
static void
nats_progress(void)
{
	Pub		   *list;
	char		buf[64];
	dlist_mutable_iter miter;
	TimestampTz now;

	if (nats_cxt == NULL)
		return;
	pthread_mutex_lock(&sink_mu);
	list = finished_head;
	finished_head = finished_tail = NULL;
	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
	wake_sent = false;
	pthread_mutex_unlock(&sink_mu);

	while (list != NULL)
	{
		Pub		   *pub = list;
		RemoteMessage *msg = pub->msg;

		list = pub->next;
		msg->result = pub->result;
		msg->retry_after_ms = -1;
		msg->status = 0;
		msg->finished_at = GetCurrentTimestamp();
		msg->reason = pub->result == REMOTE_DELIVERED ? NULL :
			MemoryContextStrdup(GetMemoryChunkContext(msg), pub->reason);
		if (pub->generation == pub->conn->generation)
			pub->conn->inflight--;
		pfree(pub);
		remote_delivery_finished(msg);
	}

	report_states();

	now = GetCurrentTimestamp();
	dlist_foreach_modify(miter, &conns)
	{
		Conn	   *conn = dlist_container(Conn, node, miter.cur);

		if (conn->inflight == 0 &&
			TimestampDifferenceExceeds(conn->last_used, now, CONN_IDLE_MS))
			conn_close(conn);
	}
}

static int
nats_sockets(const RemoteSocket **socks, TimestampTz *deadline, bool *changed)
{
	bool		have = nats_cxt != NULL;

	*socks = &wake_socket;
	*deadline = 0;
	*changed = have != wake_socket_reported;
	wake_socket_reported = have;
	return have ? 1 : 0;
}

static void
nats_ready(const RemoteSocket *ready, int nready)
{
	nats_progress();
}

/* The extension is gone: close every connection, forget every message. */
static void
nats_cancel_all(void)
{
	dlist_mutable_iter miter;

	if (nats_cxt == NULL)
		return;
	dlist_foreach_modify(miter, &conns)
		conn_close(dlist_container(Conn, node, miter.cur));
	pthread_mutex_lock(&sink_mu);
	while (finished_head != NULL)
	{
		Pub		   *pub = finished_head;

		finished_head = pub->next;
		pfree(pub);
	}
	finished_tail = NULL;
	pthread_mutex_unlock(&sink_mu);
}

const RemoteSink nats_sink = {
	.message_events = nats_message_events,
	.max_message_bytes = nats_max_message_bytes,
	.start = nats_start,
	.progress = nats_progress,
	.sockets = nats_sockets,
	.ready = nats_ready,
	.cancel_all = nats_cancel_all,
};
