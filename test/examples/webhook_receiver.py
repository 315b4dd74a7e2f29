#!/usr/bin/python3
"""Example: a Standard Webhooks receiver for pg_notifier webhook routes.

For every POST it
  - verifies `webhook-signature`: v1,base64(HMAC-SHA256(key, id + "." + timestamp
    + "." + body)), key = the base64-decoded part of a whsec_ secret (or the
    secret's bytes); the header may hold several space-separated signatures;
  - rejects a `webhook-timestamp` more than 5 minutes away from now (replays);
  - drops duplicates by `webhook-id` (delivery is at least once), answering 200;
  - then hands the event (or the array of events of a batch) to handle().
Bad signature or timestamp: 401 (pg_notifier does not retry it: dead at once).

Standalone:  WEBHOOK_SECRET=whsec_... python3 webhook_receiver.py --serve PORT
             prints every verified event.

As a test (no arguments; test/run examples): it starts itself on a free port of
127.0.0.1, checks its own verification (bad signature, stale timestamp, missing
headers rejected; a duplicate id accepted once), then, against the cluster of
the libpq environment (PGHOST, PGPORT, PGUSER; shared_preload_libraries =
pg_notifier), creates the database pg_notifier_ex_webhook, adds it to
pg_notifier.databases (ALTER SYSTEM + reload; put back at the end, and the
database dropped), watches a table, adds a webhook route with a whsec_ secret
and a custom header, produces events, and checks all arrive, each once, with a
valid signature, equal to what a LISTEN client saw, and every row of
notifier.deliveries is delivered.  Exit status 0 when all held, 1 otherwise.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request

TOLERANCE = 5 * 60          # seconds
NAME = "webhook_receiver"


# ------------------------------------------------------------------ the receiver

def secret_key(secret):
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(key, msg_id, timestamp, body):
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class Rejected(Exception):
    pass


def verify(key, headers, body, now=None):
    """Raise Rejected unless the request is signed with key and fresh."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not (msg_id and ts and sigs):
        raise Rejected("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        t = int(ts)
    except ValueError:
        raise Rejected(f"bad webhook-timestamp {ts!r}") from None
    now = time.time() if now is None else now
    if abs(now - t) > TOLERANCE:
        raise Rejected(f"webhook-timestamp {t} is {now - t:+.0f} s from now")
    expected = sign(key, msg_id, ts, body).split(",", 1)[1]
    for s in sigs.split():
        version, _, value = s.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return msg_id
    raise Rejected("no valid signature")


class Receiver:
    def __init__(self, secret, handle, port=0, keep_ids=100000):
        self.key = secret_key(secret)
        self.handle = handle
        self.seen = {}                # webhook-id -> time first seen
        self.keep_ids = keep_ids
        self.rejected = []
        self.duplicates = 0
        self.lock = threading.Lock()
        rcv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"          # keep-alive, as the worker uses it

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = rcv.receive(self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def receive(self, headers, body):
        try:
            msg_id = verify(self.key, headers, body)
            payload = json.loads(body)
        except (Rejected, ValueError) as ex:
            with self.lock:
                self.rejected.append(str(ex))
            return 401 if isinstance(ex, Rejected) else 400
        with self.lock:
            if msg_id in self.seen:
                self.duplicates += 1
                return 200            # already processed: acknowledge, do nothing
            self.seen[msg_id] = time.time()
            if len(self.seen) > self.keep_ids:       # forget the oldest ids
                for k in list(self.seen)[: len(self.seen) - self.keep_ids]:
                    del self.seen[k]
        try:
            self.handle(msg_id, headers, payload)
        except Exception:                            # noqa: BLE001
            with self.lock:
                self.seen.pop(msg_id, None)          # let the retry process it
            return 500
        return 200

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def serve(port):
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        sys.exit("set WEBHOOK_SECRET to the route's secret")

    def show(msg_id, headers, payload):
        print(json.dumps(payload), flush=True)
    r = Receiver(secret, show, port)
    print(f"listening on http://127.0.0.1:{r.port}/", file=sys.stderr, flush=True)
    r.server.serve_forever()


# ------------------------------------------------------------------ the test

class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wait_until(what, fn, timeout=15):
    t0 = time.monotonic()
    while not fn():
        if time.monotonic() - t0 > timeout:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def post(port, headers, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hook", data=body, method="POST",
                                 headers=dict(headers, **{"Content-Type": "application/json"}))
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as ex:
        return ex.code


def self_test(rcv, secret, got):
    key = secret_key(secret)
    body = b'{"id":"self.1","op":"INSERT"}'
    now = str(int(time.time()))

    def hdrs(msg_id, ts, sig):
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
    good = hdrs("self.1", now, sign(key, "self.1", now, body))
    check(post(rcv.port, good, body) == 200, "a valid request was not accepted")
    check(post(rcv.port, good, body) == 200, "a duplicate was not acknowledged")
    check(rcv.duplicates == 1 and len(got) == 1, "a duplicate was processed twice")
    bad = hdrs("self.2", now, sign(b"another key", "self.2", now, body))
    check(post(rcv.port, bad, body) == 401, "a bad signature was accepted")
    tampered = hdrs("self.3", now, sign(key, "self.3", now, body))
    check(post(rcv.port, tampered, body + b" ") == 401, "a changed body was accepted")
    old = str(int(time.time()) - TOLERANCE - 60)
    check(post(rcv.port, hdrs("self.4", old, sign(key, "self.4", old, body)), body) == 401,
          "a stale timestamp was accepted")
    check(post(rcv.port, {"webhook-id": "self.5"}, body) == 401, "missing headers accepted")
    multi = hdrs("self.6", now, "v1,AAAA " + sign(key, "self.6", now, body))
    check(post(rcv.port, multi, body) == 200, "a second signature in the header was not tried")
    check(len(rcv.rejected) == 4, f"rejections: {rcv.rejected}")
    got.clear()
    rcv.rejected.clear()
    rcv.duplicates = 0


def run_test():
    import psycopg
    from psycopg import sql

    db_name = os.environ.get("PG_NOTIFIER_EXAMPLE_DB", "pg_notifier_ex_webhook")
    guc = "pg_notifier.databases"
    t_start = time.monotonic()
    errors = []
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    got = []
    lock = threading.Lock()

    def handle(msg_id, headers, payload):
        with lock:
            got.append((msg_id, dict(headers), payload))

    rcv = Receiver(secret, handle).start()
    admin = psycopg.connect(dbname="postgres", autocommit=True)
    saved = admin.execute("SELECT setting FROM pg_file_settings WHERE name = %s AND sourcefile "
                          "LIKE '%%postgresql.auto.conf' ORDER BY seqno DESC LIMIT 1",
                          (guc,)).fetchone()
    saved = saved[0] if saved else None
    if saved:
        saved = ", ".join(d.strip() for d in saved.split(",") if d.strip() != db_name) or None

    def set_databases(value):
        if value is None:
            admin.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(guc)))
        else:
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(guc), sql.Literal(value)))
        admin.execute("SELECT pg_reload_conf()")

    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    try:
        self_test(rcv, secret, got)
        print(f"   receiver on 127.0.0.1:{rcv.port}: rejects bad/missing signatures and stale "
              "timestamps, drops duplicates", flush=True)

        db = psycopg.connect(dbname=db_name, autocommit=True)
        db.execute("CREATE EXTENSION pg_notifier")
        db.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric)")
        db.execute("SELECT notifier.watch('orders')")
        current = admin.execute(sql.SQL("SHOW {}").format(sql.SQL(guc))).fetchone()[0]
        dbs = [d.strip() for d in current.split(",") if d.strip() and d.strip() != db_name]
        set_databases(", ".join(dbs + [db_name]))
        route = db.execute("SELECT notifier.add_webhook('orders', %s, headers => %s, secret => %s)",
                           (f"http://127.0.0.1:{rcv.port}/orders", '{"X-Example": "pg_notifier"}',
                            secret)).fetchone()[0]

        def listening():
            r = db.execute("SELECT state, channels FROM notifier.status() WHERE database = %s",
                           (db_name,)).fetchone()
            return r is not None and r[0] in ("listening", "forwarding") and "orders" in (r[1] or [])
        wait_until("notifier.status() to list channel orders", listening)

        # a LISTEN client sees the same events, for comparison
        lis = psycopg.connect(dbname=db_name, autocommit=True)
        lis.execute("LISTEN orders")
        for i in range(1, 31):
            db.execute("INSERT INTO orders VALUES (%s, 'new', %s)", (i, i))
        with db.transaction():
            for i in range(1, 11):
                db.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (i,))
        db.execute("DELETE FROM orders WHERE id > 25")
        n = 30 + 10 + 5
        seen = []
        lis.add_notify_handler(lambda notify: seen.append(json.loads(notify.payload)))
        deadline = time.monotonic() + 15
        while len(seen) < n and time.monotonic() < deadline:
            lis.execute("SELECT 1")          # a round trip delivers pending notifications
            time.sleep(0.05)
        check(len(seen) == n, f"the LISTEN client saw {len(seen)} events, expected {n}")
        wait_until(f"{n} webhook requests", lambda: len(got) >= n, 20)
        time.sleep(0.3)
        with lock:
            events = list(got)
        check(len(events) == n, f"{len(events)} events received, expected {n}")
        check(not rcv.rejected, f"requests rejected: {rcv.rejected[:3]}")
        by_id = {p["id"]: p for _, _, p in events}
        check(len(by_id) == n, "an event arrived twice")
        check(by_id == {e["id"]: e for e in seen}, "the webhook bodies differ from the LISTEN events")
        for msg_id, headers, payload in events:
            check(msg_id == payload["id"], f"webhook-id {msg_id} != event id {payload['id']}")
            check(headers.get("X-Example") == "pg_notifier", f"custom header missing: {headers}")
            check(headers.get("Content-Type") == "application/json", "Content-Type")
        statuses = dict(db.execute("SELECT status, count(*) FROM notifier.deliveries "
                                   "WHERE route_id = %s GROUP BY 1", (route,)).fetchall())
        check(statuses == {"delivered": n}, f"notifier.deliveries: {statuses}")
        print(f"   {n} events delivered to route {route}, each once, signed (whsec_), "
              "equal to what a LISTEN client saw", flush=True)
        lis.close()
        db.close()
    except Failure as ex:
        errors.append(str(ex))
    except psycopg.Error as ex:
        errors.append(f"{type(ex).__name__}: {ex}")
    finally:
        try:
            set_databases(saved)
            t0 = time.monotonic()
            while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                "AND backend_type = 'pg_notifier worker'", (db_name,)).fetchone()[0]:
                if time.monotonic() - t0 > 10:
                    errors.append(f"the worker of {db_name} still runs 10 s after the reload")
                    break
                time.sleep(0.1)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(db_name)))
        except psycopg.Error as ex:
            errors.append(f"cleanup: {type(ex).__name__}: {ex}")
        admin.close()
        rcv.stop()
    if errors:
        print(f"FAIL {NAME}:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"PASS {NAME} in {time.monotonic() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 1:
        sys.exit(run_test())
    else:
        sys.exit(f"usage: {sys.argv[0]} [--serve PORT]   (no arguments: run the self-test)")
