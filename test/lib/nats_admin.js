// nats_admin.js -- JetStream stream administration for the NATS tests
// (test/lib/natsserver.py), with Node's official nats client.
//
//   NATS_URLS=nats://127.0.0.1:4222[,...] [NATS_TOKEN=...] [NATS_CA=ca.pem]
//   node nats_admin.js add NAME SUBJECT[,SUBJECT...] REPLICAS   -> stream info (JSON)
//   node nats_admin.js info NAME                                -> {"messages","leader","replicas"} or nothing
//   node nats_admin.js delete NAME
"use strict";

const { connect } = require("nats");

function options() {
  const opts = { servers: process.env.NATS_URLS.split(","), timeout: 5000, maxReconnectAttempts: 20 };
  if (process.env.NATS_TOKEN) opts.token = process.env.NATS_TOKEN;
  if (process.env.NATS_CA) opts.tls = { caFile: process.env.NATS_CA };
  return opts;
}

async function main() {
  const [cmd, name, subjects, replicas] = process.argv.slice(2);
  const nc = await connect(options());
  const jsm = await nc.jetstreamManager({ timeout: 10000 });
  try {
    if (cmd === "add") {
      const si = await jsm.streams.add({
        name,
        subjects: subjects.split(","),
        num_replicas: Number(replicas || 1),
        duplicate_window: 120 * 1e9, // nanoseconds: two minutes
      });
      console.log(JSON.stringify({ name: si.config.name, replicas: si.config.num_replicas }));
    } else if (cmd === "info") {
      let si;
      try {
        si = await jsm.streams.info(name);
      } catch (err) {
        if (String(err.message).includes("not found")) return;
        throw err;
      }
      console.log(JSON.stringify({
        messages: si.state.messages,
        leader: si.cluster ? si.cluster.leader : null,
        replicas: si.cluster && si.cluster.replicas ? si.cluster.replicas.map((r) => r.name) : [],
      }));
    } else if (cmd === "delete") {
      await jsm.streams.delete(name);
    } else {
      throw new Error(`unknown command ${cmd}`);
    }
  } finally {
    await nc.close();
  }
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
