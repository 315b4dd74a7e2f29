#!/usr/bin/python3
"""The NATS JetStream sink end to end, against real nats-server processes
started here on 127.0.0.1 (free ports, store directories of their own,
stopped at the end), read back with Node's official nats client
(test/examples/nats_consumer.js, test/lib/nats_admin.js).

Steps:
  r1          an R1 stream: routes ordered by key and by route; every event
              arrives once, complete, in order, with its subject and headers
  no-stream   no stream captures the subject: retried, then dead, with that reason;
              once a stream captures it, redeliver_dead() delivers it
  subjects    subjects from odd schema and table names; where a stream captures
              one table's events and not another's, interleaved in one
              transaction, the one's are delivered and the other's dead
  large       an event over the server's max_payload is dead at once, alone
  pause       pause_route() keeps a route's events, resume_route() sends them,
              replay() sends them again: duplicates JetStream drops
  rate        max_per_second 40: 200 events stored by the stream at 40 per
              second (its own timestamps), within 10 %
  server-down one route's server is down: retried with backoff while a route
              to another server delivers; the server back, everything arrives
  auth        a token server: the wrong token is dead at once with the reason,
              the right one delivers
  denied      an address in pg_notifier.denied_networks (127.0.0.2, spelled
              2130706434) is dead with "address denied"
  tls         TLS with a CA made here with openssl: verified against tls_ca_file
  cluster     a 3-node cluster, an R3 stream, its leader killed during a burst
              of 50,000 events: each event in the stream exactly once
  cluster-down  the whole cluster down for 10 s while events are written,
              then back: every event in the stream exactly once

Runs against test/run's cluster.  Debian's python3:
    /usr/bin/python3 test/integration/test_nats.py [STEP...]
"""

import collections
import json
import os
import subprocess
import sys
import tempfile
import shutil
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Step, TestFailure, WorkerCtx, log, run_worker_test, wait_for  # noqa: E402
from natsserver import NatsAdmin, NatsCluster, NatsServer, ensure_node_nats  # noqa: E402

NAME = "test_nats"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "600"))
DB = os.environ.get("PG_NOTIFIER_TEST_DB", "pg_notifier_it_nats")
SETTINGS = {"pg_notifier.retry_base_ms": "100", "pg_notifier.retry_max_ms": "1000"}


class NatsCtx(WorkerCtx):
    def __init__(self):
        super().__init__()
        self.servers = []
        self.clusters = []
        self.dirs = []

    def server(self, **kw):
        srv = NatsServer(**kw)
        self.servers.append(srv)
        return srv


def stream_info(adm, name):
    """The stream's info, or None while JetStream does not answer (a cluster
    electing its leaders after a restart)."""
    try:
        return adm.info(name)
    except RuntimeError as ex:
        log(f"stream info: {str(ex)[-200:]}")
        return None


def connection(db, route):
    return db.execute("SELECT connection FROM notifier.stats WHERE route_id = %s", (route,)).fetchone()[0]


def route_stats(db, route):
    return db.execute("SELECT delivered, retried, dead, pending, in_flight, last_error"
                      " FROM notifier.stats WHERE route_id = %s", (route,)).fetchone()


def deliveries(db, route):
    """{status: count} of the route's rows."""
    return dict(db.execute("SELECT status, count(*) FROM notifier.deliveries WHERE route_id = %s"
                           " GROUP BY status", (route,)).fetchall())


def wait_delivered(db, route, n, timeout=60):
    return wait_for(f"route {route}: {n} delivered",
                    lambda: (lambda s: (s.get("delivered", 0) >= n, s))(deliveries(db, route)),
                    timeout)


def committed_events(db, table):
    """The events the worker received for the routes of a table's channel,
    from notifier.deliveries: {event id: payload}."""
    return dict(db.execute("SELECT event_id, payload::text FROM notifier.deliveries d"
                           " WHERE payload->>'table' = %s", (table,)).fetchall())


def check_messages(ctx, msgs, route_events, subject_prefix, channel, what):
    """Every message: Nats-Msg-Id = the event's id, the channel and op
    headers, the subject from the template; each event once."""
    ids = [m["headers"].get("Nats-Msg-Id") for m in msgs]
    ctx.check(len(ids) == len(set(ids)), f"{what}: {len(ids) - len(set(ids))} duplicate messages")
    for m in msgs:
        ev = json.loads(m["data"])
        h = m["headers"]
        exp_subject = f"{subject_prefix}.{ev['schema']}.{ev['table']}.{ev['op'].lower()}"
        if not (h.get("Nats-Msg-Id") == ev["id"] and h.get("pg-notifier-channel") == channel
                and h.get("pg-notifier-op") == ev["op"] and m["subject"] == exp_subject):
            raise TestFailure(f"{what}: message {m} (expected subject {exp_subject})")
    missing = set(route_events) - set(ids)
    ctx.check(not missing, f"{what}: {len(missing)} events missing, e.g. {sorted(missing)[:5]}")


def step_r1(ctx):
    db = ctx.db
    srv = ctx.server().start()
    adm = NatsAdmin(srv.url)
    adm.add_stream("KEYED", ["keyed.>"])
    adm.add_stream("FIFO", ["fifo.>"])
    db.execute("CREATE TABLE r1_t (id int PRIMARY KEY, n int)")
    db.execute("SELECT notifier.watch('r1_t', channel => 'r1')")
    by_key = db.execute("SELECT notifier.add_nats('r1', %s, subject => 'keyed.{schema}.{table}.{op}',"
                        " ordered => 'key', headers => '{\"X-Team\": \"billing\"}', concurrency => 32)",
                        (srv.url,)).fetchone()[0]
    by_route = db.execute("SELECT notifier.add_nats('r1', %s, subject => 'fifo.{schema}.{table}.{op}',"
                          " ordered => 'route')", (srv.url,)).fetchone()[0]
    # 20 keys, each inserted then updated 9 times, then half of them deleted
    db.execute("INSERT INTO r1_t SELECT g, 0 FROM generate_series(1, 20) g")
    for i in range(1, 10):
        db.execute("UPDATE r1_t SET n = %s", (i,))
    db.execute("DELETE FROM r1_t WHERE id % 2 = 0")
    total = 20 + 9 * 20 + 10
    wait_delivered(db, by_key, total)
    wait_delivered(db, by_route, total)
    events = committed_events(db, "r1_t")

    keyed = adm.messages("KEYED", count=total, idle_ms=3000)
    fifo = adm.messages("FIFO", count=total, idle_ms=3000)
    ctx.check(len(keyed) == total and len(fifo) == total,
              f"{len(keyed)} and {len(fifo)} messages, expected {total} each")
    check_messages(ctx, keyed, {i for i in events}, "keyed", "r1", "ordered by key")
    check_messages(ctx, fifo, {i for i in events}, "fifo", "r1", "ordered by route")
    ctx.check(all(m["headers"].get("X-Team") == "billing" for m in keyed), "the route's header X-Team missing")
    # complete: the message is the event as committed
    ctx.check(all(json.loads(m["data"]) == json.loads(events[m["headers"]["Nats-Msg-Id"]]) for m in keyed),
              "a message differs from its event")

    # order: by route, the commit order (the order of the delivery rows);
    # by key, the order of each key's events
    order = [r[0] for r in db.execute("SELECT event_id FROM notifier.deliveries WHERE route_id = %s"
                                      " ORDER BY id", (by_route,)).fetchall()]
    ctx.check([m["headers"]["Nats-Msg-Id"] for m in fifo] == order, "ordered => 'route': not in commit order")
    per_key = collections.defaultdict(list)
    for m in keyed:
        ev = json.loads(m["data"])
        per_key[ev["key"]["id"]].append(ev)
    bad = [k for k, evs in per_key.items()
           if [e.get("row", {}).get("n") for e in evs if e["op"] != "DELETE"] != list(range(10))]
    ctx.check(not bad, f"ordered => 'key': keys {bad[:5]} out of order")
    ctx.result(f"r1: {total} events to each of two routes, once each, in order, subjects and headers right")


def step_no_stream(ctx):
    db = ctx.db
    srv = ctx.server().start()
    db.execute("CREATE TABLE ns_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('ns_t', channel => 'ns')")
    route = db.execute("SELECT notifier.add_nats('ns', %s, subject => 'nowhere.{table}', max_attempts => 3)",
                       (srv.url,)).fetchone()[0]
    db.execute("INSERT INTO ns_t VALUES (1)")
    row, secs = wait_for("the event dead", lambda: (lambda r: (r is not None and r[0] == "dead", r))(
        db.execute("SELECT status, attempts, last_error FROM notifier.deliveries WHERE route_id = %s",
                   (route,)).fetchone()), 60)
    ctx.check(row[1] == 3, f"dead after {row[1]} attempts, expected max_attempts 3")
    ctx.check("no stream" in row[2] and "nowhere.ns_t" in row[2], f"reason: {row[2]!r}")
    adm = NatsAdmin(srv.url)
    adm.add_stream("NOWHERE", ["nowhere.>"])
    n = db.execute("SELECT notifier.redeliver_dead(%s)", (route,)).fetchone()[0]
    wait_delivered(db, route, 1)
    stored = adm.info("NOWHERE")["messages"]
    ctx.check(n == 1 and stored == 1, f"redeliver_dead: {n} redelivered, {stored} in the stream (expected 1, 1)")
    ctx.result(f"no stream: retried, dead after 3 attempts with {row[2]!r}; redeliver_dead() "
               "delivered it once a stream captured the subject")


def step_subjects(ctx):
    """Subjects from odd names; a message never mixes subjects: where a
    stream captures one table's events and not the other's, in one
    transaction interleaved, the one's are delivered and the other's dead."""
    db = ctx.db
    srv = ctx.server().start()
    NatsAdmin(srv.url).add_stream("MIX", ["mix.sales.order_items.>"])
    db.execute('CREATE SCHEMA "Sales"')
    db.execute('CREATE TABLE "Sales"."Order Items" (id int PRIMARY KEY)')
    db.execute("CREATE TABLE mx_plain (id int PRIMARY KEY)")
    db.execute("""SELECT notifier.watch('"Sales"."Order Items"', channel => 'mix')""")
    db.execute("SELECT notifier.watch('mx_plain', channel => 'mix')")
    route = db.execute("SELECT notifier.add_nats('mix', %s, subject => 'mix.{schema}.{table}.{op}',"
                       " max_attempts => 2)", (srv.url,)).fetchone()[0]
    with db.transaction():
        for i in range(1, 31):
            db.execute('INSERT INTO "Sales"."Order Items" VALUES (%s)', (i,))
            db.execute("INSERT INTO mx_plain VALUES (%s)", (i,))
    rows, _ = wait_for("every event delivered or dead", lambda: (lambda r: (
        sum(r.values()) == 60 and set(r) <= {"delivered", "dead"}, r))(deliveries(db, route)), 60)
    ctx.check(rows == {"delivered": 30, "dead": 30}, f"rows {rows}")
    bad = db.execute("SELECT count(*) FROM notifier.deliveries WHERE route_id = %s AND"
                     " ((status = 'delivered') <> (payload->>'table' = 'Order Items'))", (route,)).fetchone()[0]
    ctx.check(bad == 0, f"{bad} events delivered or dead for the wrong table")
    msgs = NatsAdmin(srv.url).messages("MIX", count=30, idle_ms=3000)
    subjects = {m["subject"] for m in msgs}
    ctx.check(len(msgs) == 30 and subjects == {"mix.sales.order_items.insert"}, f"{len(msgs)} messages, subjects {subjects}")
    reason = db.execute("SELECT last_error FROM notifier.deliveries WHERE route_id = %s AND status = 'dead'"
                        " LIMIT 1", (route,)).fetchone()[0]
    ctx.check("mix.public.mx_plain.insert" in reason, f"reason {reason!r}")
    ctx.result(f"subjects: \"Sales\".\"Order Items\" -> mix.sales.order_items.insert; its 30 events delivered, "
               f"the 30 interleaved ones no stream captures dead ({reason!r})")


def step_large(ctx):
    """An event larger than the server's max_payload (1 MB) is dead at once
    with that reason; the events around it, in the same transaction, are
    delivered: a message never fails as a unit for one event's size."""
    db = ctx.db
    srv = ctx.server().start()
    NatsAdmin(srv.url).add_stream("BIG", ["big.>"])
    db.execute("CREATE TABLE lg_t (id int PRIMARY KEY, body text)")
    db.execute("SELECT notifier.watch('lg_t', channel => 'lg')")
    route = db.execute("SELECT notifier.add_nats('lg', %s, subject => 'big.{table}')", (srv.url,)).fetchone()[0]
    with db.transaction():
        db.execute("INSERT INTO lg_t SELECT g, 'x' FROM generate_series(1, 20) g")
        db.execute("INSERT INTO lg_t VALUES (21, repeat('y', 2 * 1024 * 1024))")
        db.execute("INSERT INTO lg_t SELECT g, 'x' FROM generate_series(22, 40) g")
    rows, _ = wait_for("every event delivered or dead", lambda: (lambda r: (
        sum(r.values()) == 40 and set(r) <= {"delivered", "dead"}, r))(deliveries(db, route)), 60)
    dead = db.execute("SELECT (payload->'key'->>'id')::int, attempts, last_error FROM notifier.deliveries"
                      " WHERE route_id = %s AND status = 'dead'", (route,)).fetchall()
    ctx.check(rows == {"delivered": 39, "dead": 1} and dead[0][0] == 21 and dead[0][1] == 1
              and "max_payload" in dead[0][2], f"rows {rows}, dead {dead}")
    n = NatsAdmin(srv.url).info("BIG")["messages"]
    ctx.check(n == 39, f"{n} messages in the stream, expected 39")
    ctx.result(f"large: the 2 MB event dead at once ({dead[0][2]!r}), the 39 around it delivered")


def step_pause(ctx):
    """pause_route() keeps a NATS route's events, resume_route() sends them;
    replay() sends delivered ones again, and JetStream drops them as
    duplicates inside its window."""
    db = ctx.db
    srv = ctx.server().start()
    adm = NatsAdmin(srv.url)
    adm.add_stream("PAUSE", ["pause.>"])
    db.execute("CREATE TABLE pa_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('pa_t', channel => 'pa')")
    route = db.execute("SELECT notifier.add_nats('pa', %s, subject => 'pause.x')", (srv.url,)).fetchone()[0]
    db.execute("INSERT INTO pa_t VALUES (0)")
    wait_delivered(db, route, 1)
    since = db.execute("SELECT clock_timestamp()").fetchone()[0]
    db.execute("SELECT notifier.pause_route(%s)", (route,))
    db.execute("INSERT INTO pa_t SELECT generate_series(1, 20)")
    wait_for("the events kept", lambda: (lambda r: (r.get("pending", 0) == 20, r))(deliveries(db, route)), 30)
    st = deliveries(db, route)
    ctx.check(st == {"delivered": 1, "pending": 20}, f"paused route's rows: {st}")
    ctx.check(adm.info("PAUSE")["messages"] == 1, "a paused route published")
    db.execute("SELECT notifier.resume_route(%s)", (route,))
    wait_delivered(db, route, 21)
    n = db.execute("SELECT notifier.replay(%s, %s)", (route, since)).fetchone()[0]
    wait_delivered(db, route, 21 + n)
    count = adm.info("PAUSE")["messages"]
    ctx.check(n == 20 and count == 21, f"replayed {n}, {count} messages in the stream (expected 20, 21)")
    ctx.result(f"pause: 20 events kept while paused, sent on resume; replay() of them dropped as duplicates ({count} messages)")


RATE = 40            # [rate]: max_per_second of the route
RATE_EVENTS = 200    # ... and its events: 5 s at that rate


def step_rate(ctx):
    """max_per_second caps publishes: the stream stores the events at that
    rate, measured with the stream's own timestamps over the whole burst (5 s:
    the bucket's first tenth of a second does not count)."""
    db = ctx.db
    srv = ctx.server().start()
    adm = NatsAdmin(srv.url)
    adm.add_stream("RATE", ["rate.>"])
    db.execute("CREATE TABLE rate_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('rate_t', channel => 'nrate')")
    route = db.execute("SELECT notifier.add_nats('nrate', %s, subject => 'rate.x', max_per_second => %s)",
                       (srv.url, RATE)).fetchone()[0]
    db.execute("INSERT INTO rate_t SELECT generate_series(1, %s)", (RATE_EVENTS,))
    wait_delivered(db, route, RATE_EVENTS, RATE_EVENTS / RATE * 3 + 10)
    msgs = adm.messages("RATE", count=RATE_EVENTS, idle_ms=3000)
    ctx.check(len(msgs) == RATE_EVENTS, f"max_per_second: {len(msgs)} messages, expected {RATE_EVENTS}")
    rate, span, busiest = ctx.check_rate([m["time_ns"] / 1e9 for m in msgs], RATE,
                                         "messages stored by the stream")
    ctx.result(f"rate: max_per_second {RATE}: {len(msgs)} events stored in {span:.2f} s = "
               f"{rate:.1f}/s by the stream's clock; busiest second {busiest}")


def step_server_down(ctx):
    db = ctx.db
    down = ctx.server()          # not started: its port refuses
    up = ctx.server().start()
    NatsAdmin(up.url).add_stream("UP", ["up.>"])
    db.execute("CREATE TABLE sd_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('sd_t', channel => 'sd')")
    r_down = db.execute("SELECT notifier.add_nats('sd', %s, subject => 'down.x', timeout_ms => 500,"
                        " max_attempts => 100)", (down.url,)).fetchone()[0]
    r_up = db.execute("SELECT notifier.add_nats('sd', %s, subject => 'up.x')", (up.url,)).fetchone()[0]
    db.execute("INSERT INTO sd_t SELECT generate_series(1, 50)")
    wait_delivered(db, r_up, 50, 30)
    # the other route retries, with backoff, and loses nothing
    _, secs = wait_for("route to the down server retried", lambda: (lambda s: (s[1] >= 50, s))(
        route_stats(db, r_down)), 60)
    st = deliveries(db, r_down)
    ctx.check(st.get("dead", 0) == 0 and st.get("delivered", 0) == 0, f"down route's rows: {st}")
    states = (connection(db, r_down), connection(db, r_up))
    ctx.check(states == ("disconnected", "connected"), f"connections in notifier.stats: {states}")
    att = db.execute("SELECT max(attempts) FROM notifier.deliveries WHERE route_id = %s", (r_down,)).fetchone()[0]
    log(f"down route: {route_stats(db, r_down)}, up to {att} attempts")
    down.start()
    NatsAdmin(down.url).add_stream("DOWN", ["down.>"])
    wait_delivered(db, r_down, 50, 60)
    n = NatsAdmin(down.url).info("DOWN")["messages"]
    ctx.check(n == 50, f"{n} messages in DOWN, expected 50")
    ctx.check(connection(db, r_down) == "connected", f"connection {connection(db, r_down)!r} once back")
    # a server that goes away after the connection: reconnecting, then connected again
    down.kill()
    wait_for("reconnecting", lambda: (lambda c: (c == "reconnecting", c))(connection(db, r_down)), 30)
    down.start()
    db.execute("INSERT INTO sd_t VALUES (51)")
    wait_delivered(db, r_down, 51, 60)
    _, _ = wait_for("connected again", lambda: (lambda c: (c == "connected", c))(connection(db, r_down)), 30)
    err = route_stats(db, r_down)[5]
    ctx.check(err == "nats connection connected again", f"last_error {err!r}")
    ctx.result("server down: retried with backoff while the other route delivered; back up, all 50 arrived once;"
               " notifier.stats.connection disconnected / connected / reconnecting / connected")


def step_auth(ctx):
    db = ctx.db
    srv = ctx.server(token="right-token").start()
    NatsAdmin(srv.url, token="right-token").add_stream("AUTH", ["auth.>"])
    db.execute("CREATE TABLE au_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('au_t', channel => 'au')")
    wrong = db.execute("SELECT notifier.add_nats('au', %s, subject => 'auth.x', token => 'wrong-token',"
                       " max_attempts => 10)", (srv.url,)).fetchone()[0]
    right = db.execute("SELECT notifier.add_nats('au', %s, subject => 'auth.x', token => 'right-token')",
                       (srv.url,)).fetchone()[0]
    db.execute("INSERT INTO au_t SELECT generate_series(1, 5)")
    wait_delivered(db, right, 5, 30)
    rows, _ = wait_for("the wrong token's events dead", lambda: (lambda r: (
        len(r) == 5 and all(x[0] == "dead" for x in r), r))(db.execute(
            "SELECT status, attempts, last_error FROM notifier.deliveries WHERE route_id = %s",
            (wrong,)).fetchall()), 60)
    ctx.check(all("authoriz" in x[2].lower() for x in rows), f"reasons: {[x[2] for x in rows]}")
    ctx.check(max(x[1] for x in rows) <= 2, f"attempts {[x[1] for x in rows]}: not dead at once")
    # the token is never shown: not in route_list, stats or a reason
    shown = db.execute("SELECT r::text FROM notifier.route_list r WHERE id = %s", (wrong,)).fetchone()[0]
    shown += db.execute("SELECT s::text FROM notifier.stats s WHERE route_id = %s", (wrong,)).fetchone()[0]
    ctx.check("wrong-token" not in shown and "wrong-token" not in str(rows), "the token is shown")
    ctx.result(f"auth: wrong token dead at {max(x[1] for x in rows)} attempt(s) with {rows[0][2]!r}; right token delivered")


def step_denied(ctx):
    db = ctx.db
    admin = ctx.connect("postgres")
    db.execute("CREATE TABLE dn_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('dn_t', channel => 'dn')")
    admin.execute("ALTER SYSTEM SET pg_notifier.denied_networks = '127.0.0.2/32'")
    admin.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)   # the worker reads the configuration file on SIGHUP
        route = db.execute("SELECT notifier.add_nats('dn', 'nats://2130706434:4222', subject => 'x')").fetchone()[0]
        db.execute("INSERT INTO dn_t VALUES (1)")
        row, _ = wait_for("the event dead", lambda: (lambda r: (r is not None and r[0] == "dead", r))(
            db.execute("SELECT status, attempts, last_error FROM notifier.deliveries WHERE route_id = %s",
                       (route,)).fetchone()), 30)
        ctx.check(row[1] == 1 and "address denied" in row[2] and "127.0.0.2" in row[2], f"row: {row}")
    finally:
        admin.execute("ALTER SYSTEM RESET pg_notifier.denied_networks")
        admin.execute("SELECT pg_reload_conf()")
    ctx.result(f"denied: nats://2130706434 (127.0.0.2) dead at once: {row[2]!r}")


def make_tls(dirpath):
    """A CA, and a server certificate it signed for localhost and 127.0.0.1."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=dirpath, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=pg_notifier test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(dirpath, "ext.cnf"), "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    for name in os.listdir(dirpath):
        os.chmod(os.path.join(dirpath, name), 0o644)
    os.chmod(dirpath, 0o755)


def step_tls(ctx):
    db = ctx.db
    d = tempfile.mkdtemp(prefix="pg_notifier_nats_tls.")
    ctx.dirs.append(d)
    make_tls(d)
    srv = ctx.server(tls=(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))).start()
    NatsAdmin(srv.url.replace("127.0.0.1", "localhost"), ca=os.path.join(d, "ca.pem")).add_stream("TLS", ["tls.>"])
    db.execute("CREATE TABLE tl_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('tl_t', channel => 'tl')")
    url = f"tls://localhost:{srv.port}"
    good = db.execute("SELECT notifier.add_nats('tl', %s, subject => 'tls.x', tls_ca_file => %s)",
                      (url, os.path.join(d, "ca.pem"))).fetchone()[0]
    unverified = db.execute("SELECT notifier.add_nats('tl', %s, subject => 'tls.y', timeout_ms => 500)",
                            (url,)).fetchone()[0]
    db.execute("INSERT INTO tl_t SELECT generate_series(1, 5)")
    wait_delivered(db, good, 5, 30)
    _, _ = wait_for("the unverified route retried", lambda: (lambda s: (s[1] >= 5, s))(
        route_stats(db, unverified)), 30)
    st = deliveries(db, unverified)
    ctx.check(st.get("delivered", 0) == 0, f"delivered without the CA: {st}")
    ctx.result(f"tls: delivered with tls_ca_file; without it never delivered ({st}, {route_stats(db, unverified)[5]!r})")


def step_cluster(ctx):
    db = ctx.db
    cl = NatsCluster(3)
    ctx.clusters.append(cl)
    cl.start()
    adm = NatsAdmin(cl.urls)
    deadline = time.monotonic() + 60
    while True:
        try:
            adm.add_stream("R3", ["r3.>"], replicas=3)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)   # JetStream's meta leader is being elected
    db.execute("CREATE TABLE cl_t (id int PRIMARY KEY)")
    db.execute("SELECT notifier.watch('cl_t', channel => 'cl', delivery => 'outbox')")
    route = db.execute("SELECT notifier.add_nats('cl', %s, subject => 'r3.x', concurrency => 512,"
                       " timeout_ms => 2000, max_attempts => 100)", (cl.urls,)).fetchone()[0]
    total = 50000
    for i in range(50):
        db.execute("INSERT INTO cl_t SELECT generate_series(%s::int, %s::int)", (i * 1000 + 1, i * 1000 + 1000))
        if i == 10:
            wait_for("some events delivered", lambda: (lambda s: (s.get("delivered", 0) > 0, s))(
                deliveries(db, route)), 60)
            leader, _ = wait_for("the stream's leader", lambda: (lambda i: (
                i is not None and i["leader"] is not None, i and i["leader"]))(stream_info(adm, "R3")), 30)
            log(f"killing the stream leader {leader}")
            cl.node(leader).kill()
            killed = cl.node(leader)
    wait_delivered(db, route, total, 300)
    killed.start()
    info, _ = wait_for("the stream holds every event", lambda: (lambda i: (i is not None and i["messages"] >= total, i))(
        stream_info(adm, "R3")), 60)
    msgs = adm.messages("R3", count=info["messages"], idle_ms=5000)
    ids = [m["headers"]["Nats-Msg-Id"] for m in msgs]
    committed = {r[0] for r in db.execute("SELECT event_id FROM notifier.deliveries WHERE route_id = %s",
                                          (route,)).fetchall()}
    ctx.check(len(committed) == total, f"{len(committed)} committed events, expected {total}")
    ctx.check(len(set(ids)) == len(ids) == info["messages"] == total,
              f"distinct ids {len(set(ids))}, messages read {len(ids)}, stream count {info['messages']}, events {total}")
    ctx.check(set(ids) == committed, "the stream's ids differ from the committed events'")
    st = route_stats(db, route)
    ctx.result(f"cluster: leader {leader} killed mid-burst; {total} events exactly once (retried {st[1]})")
    ctx.cluster, ctx.cluster_route, ctx.cluster_total = cl, route, total


def step_cluster_down(ctx):
    """The whole cluster down for 10 s while events are written, then back."""
    db, cl, route = ctx.db, ctx.cluster, ctx.cluster_route
    adm = NatsAdmin(cl.urls)
    for n in cl.nodes:
        n.stop()
    log("the three servers stopped")
    t0 = time.monotonic()
    written = 0
    while time.monotonic() - t0 < 10:
        db.execute("INSERT INTO cl_t SELECT generate_series(%s::int, %s::int)",
                   (ctx.cluster_total + written + 1, ctx.cluster_total + written + 100))
        written += 100
        time.sleep(0.1)
    st = deliveries(db, route)
    ctx.check(st.get("dead", 0) == 0, f"dead while the cluster was down: {st}")
    log(f"{written} events written in 10 s with the cluster down; rows {st}")
    cl.start()
    total = ctx.cluster_total + written
    wait_delivered(db, route, total, 300)
    info, _ = wait_for("the stream holds every event", lambda: (lambda i: (i is not None and i["messages"] >= total, i))(
        stream_info(adm, "R3")), 120)
    msgs = adm.messages("R3", count=info["messages"], idle_ms=5000)
    ids = [m["headers"]["Nats-Msg-Id"] for m in msgs]
    ctx.check(len(set(ids)) == len(ids) == info["messages"] == total,
              f"distinct ids {len(set(ids))}, messages read {len(ids)}, stream count {info['messages']}, events {total}")
    ctx.result(f"cluster down 10 s: {written} events written meanwhile; all {total} in the stream exactly once")


def cleanup_servers(ctx):
    for srv in ctx.servers:
        srv.cleanup()
    for cl in ctx.clusters:
        cl.cleanup()
    for d in ctx.dirs:
        shutil.rmtree(d, ignore_errors=True)


STEPS = [
    Step("r1", "R1 stream: once, complete, in order, subjects and headers", step_r1),
    Step("no-stream", "no stream for the subject: retried, then dead with the reason", step_no_stream),
    Step("subjects", "subjects from odd names; a message never mixes subjects", step_subjects),
    Step("large", "an event over max_payload dead alone", step_large),
    Step("pause", "pause_route / resume_route / replay of a NATS route", step_pause),
    Step("rate", "max_per_second: publishes at that rate", step_rate),
    Step("server-down", "a server down: retried with backoff, the other route unaffected", step_server_down),
    Step("auth", "wrong token: dead at once with the reason", step_auth),
    Step("denied", "denied_networks: dead with address denied", step_denied),
    Step("tls", "TLS verified against a CA made here", step_tls),
    Step("cluster", "R3 cluster, leader killed during 50,000 events: exactly once", step_cluster, True),
    Step("cluster-down", "the whole cluster down 10 s during writes: nothing lost", step_cluster_down,
         needs=("cluster",)),
]


if __name__ == "__main__":
    ensure_node_nats()
    ctx = NatsCtx()
    try:
        run_worker_test(NAME, STEPS, ctx, DB, settings=SETTINGS, timeout=TIMEOUT)
    finally:
        cleanup_servers(ctx)
