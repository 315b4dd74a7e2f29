"""An HTTP webhook receiver for the crash tests: records every request
(path, webhook-id, timestamp, signature, body, whether it was answered) and
answers 200 after a short delay.  Threaded, keep-alive; start()/stop() on a
fixed port so that a test can take it down and bring it back.

Import it from test/integration/*.py with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
"""

import http.server
import json
import socket
import threading
import time

from owncluster import TestFailure


class Req:
    __slots__ = ("seq", "path", "wid", "ts", "sig", "body", "t0", "answered", "evs")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        self.rcv.errors += 1


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the status line + headers and the body go out as two writes;
    # with Nagle the second waits for the client's delayed ACK (~40 ms)
    disable_nagle_algorithm = True
    server_version = "pg-notifier-test-receiver"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.server.rcv._conn(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.rcv._conn(self.connection, False)

    def do_POST(self):
        self.server.rcv._handle(self)


class Receiver:
    """Records every request; answers 200 after delay seconds."""

    def __init__(self, delay=0.02):
        self.delay = delay
        self.port = 0
        self.lock = threading.Lock()
        self.reqs = []
        self.conns = set()
        self.errors = 0
        self.server = None
        self.thread = None

    def start(self):
        t0 = time.monotonic()
        while True:
            try:
                srv = _Server(("127.0.0.1", self.port), _Handler)
                break
            except OSError as ex:
                if self.port == 0 or time.monotonic() - t0 > 10:
                    raise TestFailure(f"receiver: cannot listen on port {self.port}: {ex}")
                time.sleep(0.1)
        srv.rcv = self
        self.port = srv.server_address[1]
        self.server = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
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
        self.thread.join(5)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def _conn(self, sock, opened):
        with self.lock:
            (self.conns.add if opened else self.conns.discard)(sock)

    def _handle(self, h):
        t0 = time.monotonic()
        try:
            n = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(n) if n else b""
        except (OSError, ValueError):
            h.close_connection = True
            return
        r = Req()
        r.path = h.path.split("?", 1)[0]
        r.wid = h.headers.get("webhook-id")
        r.ts = h.headers.get("webhook-timestamp")
        r.sig = h.headers.get("webhook-signature")
        r.body = body
        r.t0 = t0
        r.answered = False
        try:        # (phase, n, event id) of each event of the body, parsed once
            b = json.loads(body)
            r.evs = [((e.get("row") or {}).get("phase"), (e.get("row") or {}).get("n"), e.get("id"))
                     for e in (b if isinstance(b, list) else [b])]
        except (ValueError, AttributeError):
            r.evs = None
        with self.lock:
            r.seq = len(self.reqs)
            self.reqs.append(r)
        time.sleep(self.delay)
        try:
            h.send_response(200)
            h.send_header("Content-Length", "2")
            h.end_headers()
            h.wfile.write(b"{}")
            h.wfile.flush()
            r.answered = True
        except OSError:
            h.close_connection = True

    def requests(self):
        with self.lock:
            return list(self.reqs)
