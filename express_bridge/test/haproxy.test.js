"use strict";
/**
 * The bridge in front of HAProxy (deploy/haproxy.cfg, Debian's haproxy) in
 * front of two single-process servers on loopback (standing in for two
 * machines): the pool's connections reach both machines, and stopping one
 * (SIGTERM: it drains, its health port says 503, HAProxy marks it down)
 * under HTTP load loses no request: the calls it refuses (ShuttingDown)
 * while it finishes a slow call, or drops, are asked again on a connection
 * to the other machine.
 *
 * Skipped when haproxy is not installed (`make test` installs it).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { spawn } = require("node:child_process");
const { startExpertd, freePort, healthOnce, REPO_ROOT } = require("./helpers");
const { writeVaderConfig, tempDir, waitFor, startBridgeApp, httpLoad, failures } = require("./pool_helpers");

const HAPROXY = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => fs.existsSync(p));
const HAPROXY_CFG = path.join(REPO_ROOT, "deploy", "haproxy.cfg");

describe("the bridge through HAProxy in front of two machines", { timeout: 300000, skip: HAPROXY ? false : "haproxy is not installed" }, () => {
  const machines = [];
  let proxy;
  let proxyLog = "";
  let endpoint;

  before(async () => {
    const config = writeVaderConfig(tempDir(), "1", "  slow:\n    expert: expertd.experts.examples:SlowExpert\n    options: {seconds: 3}\n");
    for (let i = 0; i < 2; i++) {
      const healthPort = await freePort();
      // --drain-timeout 10: a stopped machine finishes its slow call (the last --drain-timeout wins)
      const server = await startExpertd({ config, args: ["--health-port", String(healthPort), "--drain-timeout", "10"] });
      machines.push({ server, healthPort });
    }
    const port = await freePort();
    endpoint = `tcp://127.0.0.1:${port}`;
    const env = { ...process.env, EXPERTD_LISTEN: `127.0.0.1:${port}` };
    machines.forEach(({ server, healthPort }, i) => {
      const name = "AB"[i];
      env[`EXPERTD_${name}`] = server.endpoint.replace("tcp://", "");
      env[`EXPERTD_${name}_HEALTH`] = String(healthPort);
    });
    proxy = spawn(HAPROXY, ["-db", "-f", HAPROXY_CFG], { env, stdio: ["ignore", "pipe", "pipe"] });
    proxy.stdout.on("data", (d) => (proxyLog += d));
    proxy.stderr.on("data", (d) => (proxyLog += d));
    await waitFor(async () => {
      if (proxy.exitCode !== null) throw new Error(`haproxy exited: ${proxyLog}`);
      return healthOnce(endpoint, 1000);
    }, 30000, "HAProxy to pass calls");
  });

  after(async () => {
    if (proxy && proxy.exitCode === null) {
      proxy.kill("SIGTERM");
      await new Promise((r) => proxy.once("exit", r));
    }
    for (const { server } of machines) await server.stop();
  });

  it("stopping one machine under HTTP load: every request answered 200", async (t) => {
    const b = await startBridgeApp({ endpoint });
    try {
      const pids = new Set(machines.map((m) => m.server.pid));
      const pool = await waitFor(() => {
        const p = b.rpc.pool.snapshot();
        return p.length === b.rpc.pool.size && new Set(p.map((c) => c.pid)).size === 2 ? p : null;
      }, 60000, "the pool to reach both machines");
      assert.ok(pool.every((c) => pids.has(c.pid)), JSON.stringify(pool));
      const retries = [];
      b.rpc.on("retry", (method, name) => retries.push(name));
      // A slow call keeps the machine that runs it draining for a while after its SIGTERM.
      const slow = fetch(`${b.url}/experts/slow`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"text": "slow"}' });
      const busy = await waitFor(() => b.rpc.pool.snapshot().find((c) => c.inFlight > 0 && c.pid), 5000, "the slow call in flight");
      const stopped = machines.find((m) => m.server.pid === busy.pid);
      const other = machines.find((m) => m !== stopped);
      const load = httpLoad(b.url, { concurrency: 16 });
      await waitFor(() => load.results.length >= 100, 60000, "answers before the stop");
      const stoppedAt = Date.now();
      await stopped.server.stop("SIGTERM");
      assert.equal((await slow).status, 200, "the slow call was not finished by the draining machine");
      const exitedAfterMs = Date.now() - stoppedAt;
      await waitFor(() => /expertd_servers\/[ab] is DOWN/.test(proxyLog), 30000, "HAProxy to mark the machine down");
      const atDown = load.results.length;
      await waitFor(() => load.results.length >= atDown + 300, 60000, "answers after the machine went down");
      await load.stop();
      const after = await waitFor(() => {
        const p = b.rpc.pool.snapshot();
        return p.length === b.rpc.pool.size && p.every((c) => c.pid === other.server.pid) ? p : null;
      }, 30000, "the pool to move to the other machine");
      t.diagnostic(`${load.results.length} answers; the machine exited ${exitedAfterMs} ms after SIGTERM; ` +
        `${retries.length} calls asked again (${JSON.stringify(countBy(retries))}); non-200: ${JSON.stringify(failures(load.results))}; ` +
        `pool now ${JSON.stringify(after.map((c) => c.pid))}`);
      assert.deepEqual(failures(load.results), {});
    } finally {
      await b.close();
    }
  });
});

function countBy(names) {
  const counts = {};
  for (const n of names) counts[n] = (counts[n] || 0) + 1;
  return counts;
}
