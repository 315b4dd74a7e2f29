"""Helpers shared by the integration tests that run against test/run's
cluster (test_worker.py, test_webhook.py): strict JSON comparison of events,
connections, error descriptions, polling.

Import it from test/integration/*.py with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
"""

import json
import random
import string
import time
from decimal import Decimal

import psycopg
from psycopg import sql


class TestFailure(Exception):
    pass


def log(msg):
    print(f"   {msg}", flush=True)


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def parse(text):
    """Strict JSON -> Python, numbers exact; raises ValueError when not JSON."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)


def canon(v):
    """Comparable form: Decimal 12.50 == 12.5, ints == equal Decimals."""
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, Decimal)):
        return Decimal(v).normalize()
    return v


def as_event(payload):
    """What a sink must get for a NOTIFY payload: the JSON value, or the payload
    as a JSON string when it is not JSON."""
    try:
        return canon(parse(payload))
    except ValueError:
        return payload


def short(v, n=200):
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def text_of(n, seed):
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters + string.digits + " ") for _ in range(n))


def connect(dbname, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(dbname=dbname, **kw)


def describe_error(ex):
    d = ex.diag
    parts = [f"ERROR {d.sqlstate}: {d.message_primary}"]
    if d.message_detail:
        parts.append(f"DETAIL: {d.message_detail}")
    if d.message_hint:
        parts.append(f"HINT: {d.message_hint}")
    return "  ".join(parts)


def ident(*names):
    return sql.Identifier(*names)


def wait_for(desc, fn, timeout, interval=0.05):
    """Poll fn() -> (done, detail) until done; returns (detail, seconds taken)."""
    t0 = time.monotonic()
    while True:
        done, detail = fn()
        if done:
            return detail, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TestFailure(f"{desc}: not within {timeout}s; last seen: {short(detail, 400)}")
        time.sleep(interval)
