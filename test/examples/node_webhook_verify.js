#!/usr/bin/env node
// Example: a webhook receiver in Node.js that verifies every request of a
// pg_notifier webhook route with the official Standard Webhooks library
// (`standardwebhooks` from npm) and with Svix's verifier (`svix`).
//
// Run as a test (test/run examples; `npm ci` in test/examples first): against the
// cluster of the libpq environment (PGHOST, PGPORT, PGUSER, which `pg` reads too;
// shared_preload_libraries = pg_notifier) it creates the database
// pg_notifier_ex_node_webhook, adds it to pg_notifier.databases (ALTER SYSTEM +
// reload; put back at the end, and the database dropped), starts an HTTP server
// on a free port of 127.0.0.1 and adds two routes with a whsec_ secret: one
// event per request, and batch_size 5.  The receiver answers 503 to the first
// attempt of every third webhook-id, so that retries (signed again, with a new
// timestamp) are verified too.  Checked: every request verifies with both
// libraries, every event arrives, a retried webhook-id carries the same body,
// and a tampered body or signature fails both.  Secret rotation: a third route
// gets a new secret with notifier.set_secret(id, new, '1 hour'); its requests
// then verify with both libraries using either secret (a receiver that has
// moved to the new one, and one that has not yet); after set_secret(id, newer,
// '0') the replaced secrets no longer verify.  Exit status 0 when all held, 1
// otherwise.
'use strict';

const http = require('http');
const crypto = require('crypto');
const { Client } = require('pg');
const standardwebhooks = require('standardwebhooks');
const svix = require('svix');

const NAME = 'node_webhook_verify';
const DB = process.env.PG_NOTIFIER_EXAMPLE_DB || 'pg_notifier_ex_node_webhook';
const GUC = 'pg_notifier.databases';
const TIMEOUT_MS = 30000;

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitUntil(what, fn, ms = TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// Both libraries verify a request: webhook-id, webhook-timestamp (within their
// tolerance of now) and webhook-signature over id.timestamp.body.
function verifyBoth(secret, body, headers) {
  const h = {
    'webhook-id': headers['webhook-id'],
    'webhook-timestamp': headers['webhook-timestamp'],
    'webhook-signature': headers['webhook-signature'],
  };
  const errors = [];
  let a;
  let b;
  try {
    a = new standardwebhooks.Webhook(secret).verify(body, h);
  } catch (err) {
    errors.push(`standardwebhooks: ${err.message}`);
  }
  try {
    b = new svix.Webhook(secret).verify(body, h);
  } catch (err) {
    errors.push(`svix: ${err.message}`);
  }
  return { errors, payload: a !== undefined ? a : b };
}

function receiver(secretOf) {
  const rcv = { requests: [], failed: new Map(), bad: [] };
  rcv.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const { errors, payload } = verifyBoth(secretOf(req.url), body, req.headers);
      const wid = req.headers['webhook-id'];
      const r = { path: req.url, wid, body, errors, payload, status: 200, headers: req.headers };
      if (errors.length > 0) {
        r.status = 401;
        rcv.bad.push(`${req.url} ${wid}: ${errors.join('; ')}`);
      } else {
        // every third webhook-id: 503 at its first attempt
        const n = rcv.failed.size + rcv.requests.filter((q) => q.status === 200).length;
        if (!rcv.failed.has(wid) && n % 3 === 0) {
          rcv.failed.set(wid, body);
          r.status = 503;
        }
      }
      rcv.requests.push(r);
      res.writeHead(r.status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ status: r.status }));
    });
  });
  return rcv;
}

async function main() {
  const secret = `whsec_${crypto.randomBytes(24).toString('base64')}`;
  const rotation = {
    old: `whsec_${crypto.randomBytes(24).toString('base64')}`,
    new: `whsec_${crypto.randomBytes(24).toString('base64')}`,
    newer: `whsec_${crypto.randomBytes(24).toString('base64')}`,
  };
  let rotateSecret = rotation.old;
  const rcv = receiver((path) => (path === '/rotate' ? rotateSecret : secret));
  await new Promise((resolve) => rcv.server.listen(0, '127.0.0.1', resolve));
  const port = rcv.server.address().port;

  // the libraries themselves: a tampered body or signature is rejected
  {
    const id = 'self.1';
    const ts = Math.floor(Date.now() / 1000).toString();
    const body = '{"id":"self.1"}';
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
    const sig = crypto.createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
    const headers = { 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': `v1,${sig}` };
    check(verifyBoth(secret, body, headers).errors.length === 0, 'a correct signature was rejected');
    check(verifyBoth(secret, '{"id":"self.2"}', headers).errors.length === 2,
      'a tampered body was accepted by a library');
    check(verifyBoth(secret, body, { ...headers, 'webhook-signature': `v1,${sig.slice(1)}A` }).errors.length === 2,
      'a tampered signature was accepted by a library');
  }

  const admin = new Client({ database: 'postgres' });
  await admin.connect();
  const savedRow = await admin.query(
    "SELECT setting FROM pg_file_settings WHERE name = $1 AND sourcefile LIKE '%postgresql.auto.conf' "
    + 'ORDER BY seqno DESC LIMIT 1', [GUC]);
  let saved = savedRow.rows.length ? savedRow.rows[0].setting : null;
  if (saved) {
    saved = saved.split(',').map((d) => d.trim()).filter((d) => d && d !== DB).join(', ') || null;
  }
  const setDatabases = async (value) => {
    if (value === null) await admin.query(`ALTER SYSTEM RESET ${GUC}`);
    else await admin.query(`ALTER SYSTEM SET ${GUC} = '${value.replace(/'/g, "''")}'`);
    await admin.query('SELECT pg_reload_conf()');
  };
  await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${DB}`);
  const db = new Client({ database: DB });
  let failure = null;
  try {
    await db.connect();
    await db.query('CREATE EXTENSION pg_notifier');
    await db.query('CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric)');
    await db.query("SELECT notifier.watch('orders')");
    const current = (await admin.query(`SHOW ${GUC}`)).rows[0][GUC];
    if (current.trim() !== '*') {
      const dbs = current.split(',').map((d) => d.trim()).filter((d) => d && d !== DB);
      await setDatabases([...dbs, DB].join(', '));
    }
    const routes = {};
    for (const [path, batch] of [['/single', 1], ['/batch', 5]]) {
      const r = await db.query('SELECT notifier.add_webhook($1, $2, secret => $3, batch_size => $4) AS id',
        ['orders', `http://127.0.0.1:${port}${path}`, secret, batch]);
      routes[path] = r.rows[0].id;
    }
    await waitUntil('notifier.status() to list channel orders', async () => {
      const r = await db.query('SELECT state, channels FROM notifier.status() WHERE database = $1', [DB]);
      return r.rows.length > 0 && ['listening', 'forwarding'].includes(r.rows[0].state)
        && (r.rows[0].channels || []).includes('orders');
    });

    for (let i = 1; i <= 30; i++) {
      await db.query("INSERT INTO orders VALUES ($1, 'new', $2)", [i, i]);
    }
    await db.query('BEGIN');
    for (let i = 1; i <= 10; i++) {
      await db.query("UPDATE orders SET status = 'paid' WHERE id = $1", [i]);
    }
    await db.query('COMMIT');
    await db.query('DELETE FROM orders WHERE id > 25');
    const n = 30 + 10 + 5;

    await waitUntil(`${n} events delivered to both routes`, async () => {
      const r = await db.query("SELECT count(*)::int AS c FROM notifier.deliveries WHERE status = 'delivered'");
      return r.rows[0].c === 2 * n;
    });

    check(rcv.bad.length === 0, `requests that did not verify: ${rcv.bad.slice(0, 3).join(' | ')}`);
    for (const path of Object.keys(routes)) {
      const reqs = rcv.requests.filter((r) => r.path === path);
      const delivered = new Set();
      const bodyOf = new Map();
      for (const r of reqs) {
        if (bodyOf.has(r.wid)) check(bodyOf.get(r.wid) === r.body, `${path}: webhook-id ${r.wid} with another body`);
        bodyOf.set(r.wid, r.body);
        if (r.status === 200) {
          const evs = Array.isArray(r.payload) ? r.payload : [r.payload];
          for (const e of evs) delivered.add(e.id);
        }
      }
      check(delivered.size === n, `${path}: ${delivered.size} events delivered, expected ${n}`);
      const retried = reqs.filter((r) => r.status === 503).length;
      check(retried > 0, `${path}: no request was retried`);
      console.log(`   ${path}: ${reqs.length} requests (${retried} answered 503 and sent again), `
        + `every one verified by standardwebhooks and svix; all ${n} events delivered`);
    }

    // secret rotation: both signatures while the previous secret is kept
    await db.query('CREATE TABLE items (id int PRIMARY KEY)');
    await db.query("SELECT notifier.watch('items')");
    const rot = (await db.query('SELECT notifier.add_webhook($1, $2, secret => $3) AS id',
      ['items', `http://127.0.0.1:${port}/rotate`, rotation.old])).rows[0].id;
    await waitUntil('notifier.status() to list channel items', async () => {
      const r = await db.query('SELECT channels FROM notifier.status() WHERE database = $1', [DB]);
      return r.rows.length > 0 && (r.rows[0].channels || []).includes('items');
    });
    const sendItems = async (from, to) => {
      for (let i = from; i <= to; i++) await db.query('INSERT INTO items VALUES ($1)', [i]);
      await waitUntil(`items up to ${to} delivered`, async () => {
        const r = await db.query("SELECT count(*)::int AS c FROM notifier.deliveries WHERE route_id = $1 "
          + "AND status = 'delivered'", [rot]);
        return r.rows[0].c === to;
      });
      return rcv.requests.filter((r) => r.path === '/rotate' && r.status === 200).slice(from - 1);
    };
    const verifies = (sec, r) => verifyBoth(sec, r.body, r.headers).errors.length === 0;
    await sendItems(1, 2);
    await db.query("SELECT notifier.set_secret($1, $2, '1 hour')", [rot, rotation.new]);
    rotateSecret = rotation.new;
    const overlap = await sendItems(3, 8);
    for (const r of overlap) {
      check(r.headers['webhook-signature'].split(' ').length === 2,
        `/rotate ${r.wid}: webhook-signature ${r.headers['webhook-signature']}, expected two`);
      check(verifies(rotation.new, r) && verifies(rotation.old, r),
        `/rotate ${r.wid}: does not verify with both the new and the old secret`);
    }
    await db.query("SELECT notifier.set_secret($1, $2, '0')", [rot, rotation.newer]);
    rotateSecret = rotation.newer;
    const after = await sendItems(9, 11);
    for (const r of after) {
      check(verifies(rotation.newer, r) && !verifies(rotation.new, r) && !verifies(rotation.old, r),
        `/rotate ${r.wid}: after set_secret(..., '0') a replaced secret still verifies`);
    }
    console.log(`   /rotate: ${overlap.length} requests during the overlap verified by standardwebhooks `
      + `and svix with either secret; ${after.length} after keep_previous 0 with the newest only`);
  } catch (err) {
    failure = err;
  } finally {
    await db.end().catch(() => {});
    try {
      await setDatabases(saved);
      await waitUntil(`the worker of ${DB} to stop`, async () => {
        const r = await admin.query("SELECT count(*)::int AS c FROM pg_stat_activity WHERE datname = $1 "
          + "AND backend_type = 'pg_notifier worker'", [DB]);
        return r.rows[0].c === 0;
      }, 10000).catch(() => {});
      await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    } finally {
      await admin.end();
      rcv.server.close();
    }
  }
  if (failure) throw failure;
}

main().then(() => {
  console.log(`PASS ${NAME}`);
  process.exit(0);
}, (err) => {
  console.log(`FAIL ${NAME}: ${err.message}`);
  process.exit(1);
});
