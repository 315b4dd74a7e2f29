#!/usr/bin/python3
"""A tiny webhook receiver for test/demo: checks the Standard Webhooks
signature of every request with Python's own hmac, prints what it got, and
answers 200.

    demo_receiver.py --port N --secret whsec_... [--log FILE]

Each request is printed as one line: webhook-id, whether the signature is
valid, and the event's op and key.  --log also appends each request (headers
and body, as JSON) to FILE, one line each.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import sys


def expected_signature(secret, msg_id, timestamp, body):
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret[len("whsec_"):])
    else:
        key = secret.encode()
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--log")
    args = parser.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            msg_id = self.headers.get("webhook-id", "")
            sig = self.headers.get("webhook-signature", "")
            ok = hmac.compare_digest(
                sig, expected_signature(args.secret, msg_id,
                                        self.headers.get("webhook-timestamp", ""), body))
            try:
                event = json.loads(body)
                if isinstance(event, list):
                    what = f"a batch of {len(event)} events"
                elif isinstance(event, dict):
                    what = f"{event.get('op')} key={json.dumps(event.get('key'))}"
                else:
                    what = json.dumps(event)
            except ValueError:
                what = "(not JSON)"
            print(f"   [webhook] {self.path} webhook-id={msg_id} "
                  f"signature {'valid' if ok else 'INVALID'}: {what}", flush=True)
            if args.log:
                with open(args.log, "a") as f:
                    f.write(json.dumps({"valid": ok, "id": msg_id,
                                        "body": body.decode()}) + "\n")
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *unused):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"   [webhook] receiver listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
