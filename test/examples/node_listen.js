#!/usr/bin/env node
// Example: a LISTEN consumer of pg_notifier events in Node.js with `pg` from npm.
//
// Run as a test (test/run examples; `npm ci` in test/examples first): against the
// cluster of the libpq environment (PGHOST, PGPORT, PGUSER, which `pg` reads too)
// it creates the database pg_notifier_ex_node, watches a table `orders`, LISTENs
// on its channel with one client and produces a small workload with a second
// client, then checks that exactly the expected events arrived, in commit order
// and well formed (keys id, op, schema, table, xid, ts, key, row in that order;
// id = <xid>.<n>; ISO UTC ts).  The database is dropped at the end.
// Exit status 0 when all held, 1 otherwise.
'use strict';

const { Client } = require('pg');

const NAME = 'node_listen';
const DB = process.env.PG_NOTIFIER_EXAMPLE_DB || 'pg_notifier_ex_node';
const CHANNEL = 'orders';
const TIMEOUT_MS = 15000;

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

function checkEvent(ev) {
  const keys = Object.keys(ev);   // JSON.parse keeps the order of the keys
  check(JSON.stringify(keys) === JSON.stringify(['id', 'op', 'schema', 'table', 'xid', 'ts', 'key', 'row']),
    `keys ${keys} of ${JSON.stringify(ev)}`);
  const m = /^(\d+)\.(\d+)$/.exec(ev.id);
  check(m && m[1] === ev.xid, `id ${ev.id} is not <xid>.<n> (xid ${ev.xid})`);
  check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/.test(ev.ts), `ts ${ev.ts}`);
  check(ev.schema === 'public' && ev.table === 'orders', `schema/table of ${JSON.stringify(ev)}`);
  check(ev.key && ev.row && ev.key.id === ev.row.id, `key/row of ${JSON.stringify(ev)}`);
}

async function main() {
  const admin = new Client({ database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${DB}`);
  const listener = new Client({ database: DB });
  const producer = new Client({ database: DB });
  try {
    await producer.connect();
    await producer.query('CREATE EXTENSION pg_notifier');
    await producer.query('CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric)');
    await producer.query("SELECT notifier.watch('orders')");

    // the consumer
    const events = [];
    let waiter = null;
    await listener.connect();
    listener.on('notification', (msg) => {
      if (msg.channel !== CHANNEL) return;
      events.push(JSON.parse(msg.payload));
      if (waiter) waiter();
    });
    listener.on('error', (err) => console.error(`   listener error: ${err.message}`));
    await listener.query(`LISTEN ${CHANNEL}`);

    // the workload: one transaction per statement, plus a coalesced one
    const expected = [];
    for (let i = 1; i <= 10; i++) {
      await producer.query("INSERT INTO orders VALUES ($1, 'new', $2)", [i, i * 2.5]);
      expected.push(['INSERT', i]);
    }
    for (let i = 1; i <= 3; i++) {
      await producer.query("UPDATE orders SET status = 'paid' WHERE id = $1", [i]);
      expected.push(['UPDATE', i]);
    }
    await producer.query("UPDATE orders SET status = 'paid' WHERE id = 1");  // no-op: no event
    await producer.query('DELETE FROM orders WHERE id = 10');
    expected.push(['DELETE', 10]);
    await producer.query('BEGIN');
    await producer.query("INSERT INTO orders VALUES (11, 'new', 1)");
    await producer.query("UPDATE orders SET status = 'shipped' WHERE id = 11");
    await producer.query('COMMIT');
    expected.push(['INSERT', 11]);

    // wait for them (and a little more, to catch extra events)
    const deadline = Date.now() + TIMEOUT_MS;
    while (events.length < expected.length && Date.now() < deadline) {
      await new Promise((resolve) => { waiter = resolve; setTimeout(resolve, 200); });
    }
    await new Promise((resolve) => setTimeout(resolve, 300));

    const got = events.map((e) => [e.op, e.key && e.key.id]);
    check(events.length === expected.length,
      `received ${events.length} events, expected ${expected.length}: ${JSON.stringify(got)}`);
    check(JSON.stringify(got) === JSON.stringify(expected),
      `received ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
    events.forEach(checkEvent);
    check(new Set(events.map((e) => e.id)).size === events.length, 'an event id repeated');
    check(events[0].row.total === 2.5 && events[0].row.status === 'new', `row of ${JSON.stringify(events[0])}`);
    const last = events[events.length - 1];
    check(last.row.status === 'shipped', `coalesced insert: ${JSON.stringify(last)}`);
    console.log(`   ${events.length} events received in commit order, well formed`);
  } finally {
    await listener.end().catch(() => {});
    await producer.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`).catch(() => {});
    await admin.end().catch(() => {});
  }
}

const t0 = Date.now();
main().then(() => {
  console.log(`PASS ${NAME} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  process.exit(0);
}, (err) => {
  console.error(`FAIL ${NAME}: ${err.message}`);
  process.exit(1);
});
