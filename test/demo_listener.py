#!/usr/bin/python3
"""A tiny LISTEN client for test/demo: pretty-prints every pg_notifier event as it
arrives, and resolves oversize events ("truncated":true) with notifier.payload(ref).

    demo_listener.py --channel orders [--control CH --progress FILE]

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE).  When
--control is given it also listens there: "step:N" makes it write N to the
--progress file (so the demo can wait until every event of a step was printed),
"stop" makes it print a summary and exit.  Without --control it runs until
Ctrl-C, which makes it a handy stand-alone viewer:

    PGHOST=/tmp/pg_notifier_demo PGPORT=... test/demo_listener.py --channel orders
"""

import argparse
import json
import os
import signal
import sys

import psycopg
from psycopg import sql

LONG = 60          # strings longer than this are abbreviated when printed


def write_atomic(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def top_level(payload):
    """[(key, raw JSON text of its value)] of a JSON object, values verbatim."""
    dec = json.JSONDecoder()
    s = payload
    i = 0
    out = []

    def ws(i):
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        return i

    i = ws(i)
    if s[i] != "{":
        raise ValueError("not a JSON object")
    i = ws(i + 1)
    if s[i] == "}":
        return out
    while True:
        key, i = json.decoder.scanstring(s, i + 1)
        i = ws(i)
        if s[i] != ":":
            raise ValueError("':' expected")
        i = ws(i + 1)
        _, end = dec.raw_decode(s, i)
        out.append((key, s[i:end]))
        i = ws(end)
        if s[i] == "}":
            return out
        if s[i] != ",":
            raise ValueError("',' expected")
        i = ws(i + 1)


def abbreviate(v):
    if isinstance(v, str) and len(v) > LONG:
        return f"{v[:40]}... ({len(v)} characters)"
    if isinstance(v, dict):
        return {k: abbreviate(x) for k, x in v.items()}
    if isinstance(v, list):
        return [abbreviate(x) for x in v]
    return v


def show_value(raw):
    if len(raw) <= 200:
        return raw
    return json.dumps(abbreviate(json.loads(raw)), separators=(",", ":"))


def pretty(payload, indent="     "):
    lines = ["{"]
    items = top_level(payload)
    for n, (k, raw) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        lines.append(f'{indent}  {json.dumps(k)}: {show_value(raw)}{comma}')
    lines.append(indent + "}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel", action="append", required=True)
    ap.add_argument("--control")
    ap.add_argument("--progress")
    ap.add_argument("--refs", help="file to append the ref of each oversize event to")
    ap.add_argument("--timeout", type=int, default=0,
                    help="exit with an error after this many seconds (0: never)")
    args = ap.parse_args()

    if args.timeout:
        def on_alarm(signum, frame):
            print(f"demo_listener: no 'stop' after {args.timeout}s, giving up", file=sys.stderr,
                  flush=True)
            os._exit(2)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(args.timeout)

    conn = psycopg.connect(autocommit=True)
    lookup = None        # a second connection, to resolve references
    channels = list(args.channel) + ([args.control] if args.control else [])
    for ch in channels:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
    print(f"   [listener] LISTEN {', '.join(args.channel)} -- pid {conn.info.backend_pid}, "
          f"waiting for events", flush=True)
    if args.progress:
        write_atomic(args.progress, "ready")

    count = 0
    try:
        for n in conn.notifies():
            if args.control and n.channel == args.control:
                if n.payload.startswith("step:") and args.progress:
                    write_atomic(args.progress, n.payload[5:])
                elif n.payload == "stop":
                    break
                continue
            count += 1
            size = len(n.payload.encode())
            try:
                ev = json.loads(n.payload)
                what = f"{ev.get('op')} {ev.get('schema')}.{ev.get('table')}"
                if "key" in ev:
                    what += " key " + json.dumps(ev["key"], separators=(",", ":"))
                body = pretty(n.payload)
            except ValueError:
                ev, what, body = None, "(not JSON)", "     " + n.payload
            print(f"   <- event #{count} on channel \"{n.channel}\" ({size} bytes): {what}")
            print("     " + body, flush=True)
            if isinstance(ev, dict) and ev.get("truncated") and "ref" in ev:
                ref = ev["ref"]
                print(f"      this event was too big for NOTIFY (8000 bytes): it is stored, "
                      f"and SELECT notifier.payload({ref}) returns it:")
                if lookup is None:
                    lookup = psycopg.connect(autocommit=True)
                full = lookup.execute("SELECT notifier.payload(%s)::text", (ref,)).fetchone()[0]
                print(f"      (the full event is {len(full.encode())} bytes)")
                print("     " + pretty(full), flush=True)
                if args.refs:
                    with open(args.refs, "a") as f:
                        f.write(f"{ref}\n")
    except KeyboardInterrupt:
        pass
    print(f"   [listener] received {count} event(s)", flush=True)
    if args.progress:
        write_atomic(args.progress, "stopped")
    conn.close()
    if lookup is not None:
        lookup.close()


if __name__ == "__main__":
    main()
