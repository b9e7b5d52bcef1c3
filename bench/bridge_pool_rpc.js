"use strict";
/**
 * The bridge's RPC client alone (no HTTP, no wrk): `concurrency` callers of
 * `opinion("vader", doc)` through one ExpertdClient (coalescing off) for
 * `seconds`; prints one JSON line: calls/s, Node CPU per call, workers reached.
 *
 *   node bench/bridge_pool_rpc.js ENDPOINT CONNECTIONS SECONDS CONCURRENCY
 */

const { ExpertdClient } = require("../express_bridge/src/rpc");

async function main() {
  const [endpoint, connections, seconds, concurrency] = process.argv.slice(2);
  const rpc = new ExpertdClient({ endpoint, connections: Number(connections), coalesce: { maxBatch: 1 } });
  await rpc.probe();
  for (let i = 0; i < 200; i++) await rpc.opinion("vader", { text: `warm-up ${i}` });
  let calls = 0;
  let errors = 0;
  const started = Date.now();
  const end = started + Number(seconds) * 1000;
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: Number(concurrency) }, async () => {
    while (Date.now() < end) {
      try {
        await rpc.opinion("vader", { text: `a fine day, number ${calls}` });
        calls += 1;
      } catch {
        errors += 1;
      }
    }
  }));
  const cpu = process.cpuUsage(cpu0);
  const wall = (Date.now() - started) / 1000;
  const workers = new Set(rpc.pool.snapshot().map((c) => c.pid)).size;
  await rpc.close();
  console.log(JSON.stringify({ calls_per_s: calls / wall, node_cpu_us_per_call: (cpu.user + cpu.system) / Math.max(1, calls), workers, errors }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
