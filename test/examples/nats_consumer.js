#!/usr/bin/env node
// Example: read pg_notifier events from a NATS JetStream stream with Node's
// official client (`nats` from npm).
//
// As a consumer, against your servers:
//   NATS_URLS=nats://127.0.0.1:4222 NATS_STREAM=ORDERS [NATS_TOKEN=...] [NATS_CA=ca.pem] \
//     node nats_consumer.js [--json]
// prints each message of the stream from its beginning (an ordered consumer:
// nothing to clean up afterwards): subject, stream sequence, the headers
// pg_notifier sets (Nats-Msg-Id = the event's id, pg-notifier-channel,
// pg-notifier-op) and the event.  --json prints one JSON object per line
// ({subject, seq, time_ns, headers, data}; time_ns: when the stream stored
// it, in nanoseconds since the epoch).  NATS_COUNT=n stops after n messages,
// NATS_IDLE_MS=ms when none came for that long (default: follow forever).
//
// As a test (test/run examples; `npm ci` in test/examples first), without
// NATS_URLS: it starts its own nats-server with JetStream on a free loopback
// port (store in a temporary directory), makes a stream ORDERS for the
// subjects app.>, a database pg_notifier_ex_nats on the cluster of the libpq
// environment with a watched table `orders` and a route
//   notifier.add_nats('orders', <url>, subject => 'app.{schema}.{table}.{op}')
// makes a few changes and checks that exactly those events arrived, in order,
// with their subjects and headers.  Everything is removed at the end.  Exit
// status 0 when all held, 1 otherwise.
'use strict';

const { connect } = require('nats');

function natsOptions(urls) {
  const opts = { servers: urls.split(','), timeout: 5000 };
  if (process.env.NATS_TOKEN) opts.token = process.env.NATS_TOKEN;
  if (process.env.NATS_CA) opts.tls = { caFile: process.env.NATS_CA };
  return opts;
}

// Read the stream from its start; onMsg({subject, seq, time_ns, headers, data}) for each.
async function consume(nc, stream, { count, idleMs, onMsg }) {
  const js = nc.jetstream();
  const consumer = await js.consumers.get(stream); // an ordered consumer
  let got = 0;
  let last = Date.now();
  while (count === undefined || got < count) {
    const batch = await consumer.fetch({ max_messages: 1000, expires: 1000 });
    let n = 0;
    for await (const m of batch) {
      if (count !== undefined && got >= count) break;
      const headers = {};
      if (m.headers) {
        for (const [k, v] of m.headers) headers[k] = v.length === 1 ? v[0] : v;
      }
      onMsg({ subject: m.subject, seq: m.seq, time_ns: m.info.timestampNanos, headers, data: m.string() });
      n++;
      got++;
    }
    if (n > 0) last = Date.now();
    else if (idleMs !== undefined && Date.now() - last >= idleMs) break;
  }
  return got;
}

async function consumerMain() {
  const json = process.argv.includes('--json');
  const nc = await connect(natsOptions(process.env.NATS_URLS));
  const count = process.env.NATS_COUNT ? Number(process.env.NATS_COUNT) : undefined;
  const idleMs = process.env.NATS_IDLE_MS ? Number(process.env.NATS_IDLE_MS) : undefined;
  await consume(nc, process.env.NATS_STREAM || 'ORDERS', {
    count,
    idleMs,
    onMsg: (m) => {
      if (json) console.log(JSON.stringify(m));
      else console.log(`#${m.seq} ${m.subject} id=${m.headers['Nats-Msg-Id']} op=${m.headers['pg-notifier-op']} ${m.data}`);
    },
  });
  await nc.close();
}

// ---- the self-contained test ----

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function selfTest() {
  const { spawn } = require('child_process');
  const fs = require('fs');
  const net = require('net');
  const os = require('os');
  const path = require('path');
  const { Client } = require('pg');
  const DB = process.env.PG_NOTIFIER_EXAMPLE_DB || 'pg_notifier_ex_nats';

  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pg_notifier_ex_nats.'));
  const server = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir],
    { stdio: 'ignore' });
  const url = `nats://127.0.0.1:${port}`;
  const admin = new Client({ database: 'postgres' });
  const db = new Client({ database: DB });
  let nc;
  let restoreDatabases; // undefined: untouched; null: RESET; else the value to set back
  try {
    for (let i = 0; ; i++) {
      try {
        nc = await connect({ servers: [url], timeout: 1000 });
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'ORDERS', subjects: ['app.>'] });

    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${DB}`);
    await db.connect();
    await db.query('CREATE EXTENSION pg_notifier');
    // the database needs a worker: in pg_notifier.databases (put back at the end)
    const cur = (await admin.query('SHOW pg_notifier.databases')).rows[0]['pg_notifier.databases'];
    const inAuto = (await admin.query("SELECT sourcefile LIKE '%postgresql.auto.conf' AS a FROM pg_settings WHERE name = 'pg_notifier.databases'")).rows[0].a;
    if (cur.trim() !== '*') {
      restoreDatabases = inAuto ? cur : null;
      await admin.query(`ALTER SYSTEM SET pg_notifier.databases = '${cur}, ${DB}'`);
      await admin.query('SELECT pg_reload_conf()');
    }
    for (let i = 0; ; i++) {
      const st = await db.query('SELECT pid FROM notifier.status() WHERE database = current_database()');
      if (st.rows.length && st.rows[0].pid) break;
      check(i < 300, 'no worker for the example database within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    await db.query('CREATE TABLE orders (id int PRIMARY KEY, status text)');
    await db.query("SELECT notifier.watch('orders')");
    await db.query("SELECT notifier.add_nats('orders', $1, subject => 'app.{schema}.{table}.{op}', ordered => 'route')", [url]);
    await db.query("INSERT INTO orders VALUES (1, 'new'), (2, 'new')");
    await db.query("UPDATE orders SET status = 'paid' WHERE id = 1");
    await db.query('DELETE FROM orders WHERE id = 2');

    const msgs = [];
    await consume(nc, 'ORDERS', { count: 4, onMsg: (m) => msgs.push(m) });
    const ops = msgs.map((m) => m.headers['pg-notifier-op']);
    check(JSON.stringify(ops) === JSON.stringify(['INSERT', 'INSERT', 'UPDATE', 'DELETE']), `ops ${ops}`);
    for (const m of msgs) {
      const ev = JSON.parse(m.data);
      check(m.subject === `app.public.orders.${ev.op.toLowerCase()}`, `subject ${m.subject} of ${m.data}`);
      check(m.headers['Nats-Msg-Id'] === ev.id, `Nats-Msg-Id ${m.headers['Nats-Msg-Id']} of ${m.data}`);
      check(m.headers['pg-notifier-channel'] === 'orders', `channel header of ${m.data}`);
      console.log(`#${m.seq} ${m.subject} id=${ev.id} ${m.data}`);
    }
    const si = await jsm.streams.info('ORDERS');
    check(si.state.messages === 4, `${si.state.messages} messages in the stream, expected 4`);
    console.log('nats_consumer: 4 events, in order, subjects and headers right');
  } finally {
    if (nc) await nc.close();
    await db.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`).catch(() => {});
    if (restoreDatabases !== undefined) {
      await admin.query(restoreDatabases === null ? 'ALTER SYSTEM RESET pg_notifier.databases'
        : `ALTER SYSTEM SET pg_notifier.databases = '${restoreDatabases}'`).catch(() => {});
      await admin.query('SELECT pg_reload_conf()').catch(() => {});
    }
    await admin.end().catch(() => {});
    server.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

(process.env.NATS_URLS ? consumerMain() : selfTest()).catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
