// nats_publish.js -- the physical reference of test/bench/nats: Node's
// official nats client doing what the sink does, asynchronous JetStream
// publishes with a Nats-Msg-Id and a PubAck each, up to WINDOW in flight.
//   NATS_URLS=... SUBJECT=... COUNT=n WINDOW=w SIZE=bytes node nats_publish.js
// prints {"count": n, "seconds": s, "per_second": r}
"use strict";

const { connect, headers } = require("nats");

async function main() {
  const count = Number(process.env.COUNT || 50000);
  const window = Number(process.env.WINDOW || 1024);
  const body = new TextEncoder().encode("x".repeat(Number(process.env.SIZE || 200)));
  const nc = await connect({ servers: process.env.NATS_URLS.split(",") });
  const js = nc.jetstream();
  const run = Date.now().toString(36);
  const t0 = process.hrtime.bigint();
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      const h = headers();
      h.set("pg-notifier-op", "INSERT");
      await js.publish(process.env.SUBJECT, body, { msgID: `${run}.${i}`, headers: h });
    }
  }
  await Promise.all(Array.from({ length: window }, worker));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ count, seconds: secs, per_second: count / secs }));
  await nc.close();
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
