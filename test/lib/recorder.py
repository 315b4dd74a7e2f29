"""An HTTP webhook receiver for the integration tests: an HTTP/1.1
keep-alive server on 127.0.0.1 in threads that records every request (path,
method, headers, body, times, client connection, requests in flight, what
it answered) and answers each path as the test scripts it (a behaviour),
200 by default.  start()/stop() on a fixed port, so that a test can take it
down and bring it back.

Import it from test/integration/*.py with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
"""

import base64
import collections
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time

from itlib import TestFailure


# ---------------------------------------------------------------- behaviours
# fn(k, req) -> (status, [(header, value)], delay): k counts the path's
# requests from 0; the answer leaves after delay seconds.

def ok(delay=0.0, status=200):
    """Behaviour: answer status (200) after delay seconds."""
    return lambda k, r: (status, [], delay)


def fail_first(n, status=500, headers=(), delay=0.0):
    """Behaviour: the first n requests of the path get status (+ headers), then 200."""
    return lambda k, r: (status, list(headers), delay) if k < n else (200, [], delay)


def always(status, headers=()):
    return lambda k, r: (status, list(headers), 0.0)


def hang(secs):
    """Behaviour: answer 200 only after secs (longer than the route's timeout)."""
    return lambda k, r: (200, [], secs)


def sig_key(secret):
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode("utf-8")


def expected_signature(secret, wid, ts, body):
    """The webhook-signature value ("v1,<base64 HMAC-SHA256>") of a request
    with webhook-id wid, webhook-timestamp ts and body, signed with secret."""
    msg = wid.encode() + b"." + ts.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(sig_key(secret), msg, hashlib.sha256).digest()).decode()


class Req:
    """One request the receiver got.  evs: (phase, n, event id) of each event
    of the body (the "row" of the crash tests' tables), None when the body
    is not events."""
    __slots__ = ("seq", "k", "path", "method", "hmap", "body", "t0", "t1", "wall", "conn",
                 "status", "inflight", "sent", "answered", "evs")

    def header(self, name):
        v = self.hmap.get(name.lower())
        return v[0] if v else None

    @property
    def wid(self):
        return self.header("webhook-id")

    @property
    def ts(self):
        return self.header("webhook-timestamp")

    @property
    def sig(self):
        return self.header("webhook-signature")


def _events(body):
    try:
        b = json.loads(body)
        return [((e.get("row") or {}).get("phase"), (e.get("row") or {}).get("n"), e.get("id"))
                for e in (b if isinstance(b, list) else [b])]
    except (ValueError, AttributeError):
        return None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # a client that went away (timeout, crash): not worth a traceback
        self.rcv.errors += 1


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"        # keep-alive
    # TCP_NODELAY: the status line + headers and the body go out as two writes;
    # with Nagle the second waits for the client's delayed ACK (~40 ms)
    disable_nagle_algorithm = True
    server_version = "pg-notifier-test-receiver"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.server.rcv._conn_open(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.rcv._conn_closed(self.connection)

    def do_POST(self):
        self.server.rcv._handle(self)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 (or another loopback address: host) in
    a thread.  Behaviour per path (on()), else ok(delay).  Every request is
    recorded."""

    def __init__(self, name="receiver", delay=0.0, port=0, host="127.0.0.1"):
        self.name = name
        self.host = host
        self.delay = delay
        self.port = port
        self.lock = threading.Lock()
        self.reqs = []
        self.script = {}
        self.counts = collections.Counter()
        self.inflight = collections.Counter()
        self.max_inflight = collections.Counter()
        self.conns = set()
        self.conn_count = 0
        self.errors = 0
        self.server = None
        self.thread = None

    # -- control ---------------------------------------------------------
    def start(self, bind_timeout=10.0):
        """Listen (again, on the same port once it has one); returns self."""
        t0 = time.monotonic()
        while True:
            try:
                srv = _Server((self.host, self.port), _Handler)
                break
            except OSError as ex:
                if self.port == 0 or time.monotonic() - t0 > bind_timeout:
                    raise TestFailure(f"receiver {self.name}: cannot listen on port "
                                      f"{self.port}: {ex}")
                time.sleep(0.1)
        srv.rcv = self
        self.port = srv.server_address[1]
        self.server = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True, name=f"receiver {self.name}")
        self.thread.start()
        return self

    def stop(self):
        """Stop listening and cut every open (keep-alive) connection."""
        srv, self.server = self.server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread is not None:
            self.thread.join(5)

    def on(self, path, fn):
        with self.lock:
            self.script[path] = fn

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def requests(self, path=None):
        with self.lock:
            return [r for r in self.reqs if path is None or r.path == path]

    def count(self, path):
        with self.lock:
            return self.counts[path]

    # -- server side -----------------------------------------------------
    def _conn_open(self, sock):
        with self.lock:
            self.conns.add(sock)
            self.conn_count += 1

    def _conn_closed(self, sock):
        with self.lock:
            self.conns.discard(sock)

    @staticmethod
    def _read_body(h):
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = h.rfile.readline(65537)
                if not line:
                    raise ValueError("connection closed inside a chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def _handle(self, h):
        t0 = time.monotonic()
        wall = time.time()
        try:
            body = self._read_body(h)
        except (OSError, ValueError):
            h.close_connection = True
            return
        r = Req()
        r.path = h.path.split("?", 1)[0]
        r.method = h.command
        hmap = {}
        for k, v in h.headers.items():
            hmap.setdefault(k.lower(), []).append(v)
        r.hmap = hmap
        r.body = body
        r.evs = _events(body)
        r.t0, r.wall, r.t1 = t0, wall, None
        r.conn = h.client_address
        r.status = None
        r.sent = []
        r.answered = False
        with self.lock:
            r.seq = len(self.reqs)
            r.k = self.counts[r.path]
            self.counts[r.path] += 1
            self.inflight[r.path] += 1
            r.inflight = self.inflight[r.path]
            self.max_inflight[r.path] = max(self.max_inflight[r.path], r.inflight)
            self.reqs.append(r)
            fn = self.script.get(r.path) or ok(self.delay)
        try:
            status, hdrs, delay = fn(r.k, r)
        except Exception as ex:       # a bug in a behaviour: answer 599, visible in the test
            status, hdrs, delay = 599, [("X-Behaviour-Error", str(ex)[:100])], 0
        if delay:
            time.sleep(delay)
        out = b"" if status in (204, 304) else json.dumps({"status": status}).encode()
        r.sent = hdrs
        # no longer "in flight" before the answer leaves: the client may send the
        # next request (on another connection) as soon as it has it
        with self.lock:
            self.inflight[r.path] -= 1
            r.t1 = time.monotonic()
            r.status = status
        try:
            h.send_response(status)
            for k, v in hdrs:
                h.send_header(k, v)
            if status not in (204, 304):
                h.send_header("Content-Length", str(len(out)))
            h.end_headers()
            if out:
                h.wfile.write(out)
            h.wfile.flush()
            r.answered = True
        except OSError:
            h.close_connection = True
