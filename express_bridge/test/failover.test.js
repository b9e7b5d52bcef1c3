"use strict";
/**
 * The server killed (SIGKILL) under HTTP load and restarted on the same port,
 * through the bridge as a real process with coalescing on (the default):
 *   - every request in flight when the server dies is answered 503
 *     ServerUnavailable (not 504) within about a second of the kill;
 *   - once the restarted server answers health(), 200s resume within about
 *     a second.
 * The times are measured from events (the kill, the first health() answer of
 * the new server); the assertions allow several times the promised second.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const { startExpertd, startBridge, freePort, sleep } = require("./helpers");

const CONCURRENCY = 16;
const PROMISED_MS = 1000;
const ALLOWED_MS = 4 * PROMISED_MS; // a loaded 2-core machine: generous, yet far below the 10-15 s this used to take

describe("server killed under load and restarted", { timeout: 300000 }, () => {
  let expertd;
  let bridge;
  let base;
  let port;

  before(async () => {
    port = await freePort();
    expertd = await startExpertd({ port });
    bridge = startBridge({ HOST: "127.0.0.1", PORT: "0", EXPERTD_ENDPOINT: expertd.endpoint, RPC_TIMEOUT: "30" });
    base = await bridge.ready;
  });

  after(async () => {
    if (bridge && bridge.proc.exitCode === null) bridge.proc.kill("SIGKILL");
    if (expertd) await expertd.stop();
  });

  it("in-flight requests get 503 within a second of the kill; 200s resume within a second of the restart", async (t) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const body = JSON.stringify({ text: "What a lovely, happy day!" });
    /** @type {{start: number, end: number, status: number, name?: string}[]} */
    const done = [];
    let running = true;
    const postOnce = () => new Promise((resolve) => {
      const start = Date.now();
      const req = http.request(`${base}/experts/vader`, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => {
          let name;
          try {
            name = JSON.parse(text).error?.name;
          } catch {
            name = "(not JSON)";
          }
          resolve({ start, end: Date.now(), status: res.statusCode, name });
        });
      });
      req.on("error", (err) => resolve({ start, end: Date.now(), status: 0, name: err.code }));
      req.end(body);
    });
    const loops = Array.from({ length: CONCURRENCY }, async () => {
      while (running) {
        const r = await postOnce();
        done.push(r);
        if (r.status !== 200) await sleep(20); // no busy loop while the server is down
      }
    });

    try {
      // Steady load first.
      await sleep(1500);
      assert.ok(done.filter((r) => r.status === 200).length > 50, `only ${done.length} answers before the kill`);

      const killedAt = Date.now();
      await expertd.stop("SIGKILL");
      // Wait (generously) until every request that was in flight at the kill has ended.
      const inFlightAtKill = () => done.filter((r) => r.start < killedAt && r.end >= killedAt);
      const waitUntil = Date.now() + 20000;
      while (Date.now() < waitUntil && done.filter((r) => r.start >= killedAt).length < CONCURRENCY) await sleep(50);
      const caught = inFlightAtKill();
      const lateOk = caught.filter((r) => r.status === 200);
      const failed = caught.filter((r) => r.status !== 200);
      const slowest = Math.max(0, ...failed.map((r) => r.end - killedAt));
      t.diagnostic(`${caught.length} requests in flight at the kill: ${lateOk.length} answered 200 just before it, ` +
        `${failed.length} failed, the last ${slowest} ms after the kill (promised: ${PROMISED_MS} ms)`);
      for (const r of failed) {
        assert.equal(r.status, 503, `a request in flight at the kill ended ${r.status} ${r.name} after ${r.end - killedAt} ms`);
        assert.equal(r.name, "ServerUnavailable");
      }
      assert.ok(slowest <= ALLOWED_MS, `in-flight requests took up to ${slowest} ms to fail`);
      const whileDown = done.filter((r) => r.start >= killedAt);
      assert.ok(whileDown.every((r) => r.status === 503), JSON.stringify(whileDown.filter((r) => r.status !== 503).slice(0, 3)));

      // Restart on the same port; startExpertd returns once health() answers.
      expertd = await startExpertd({ port });
      const backAt = Date.now();
      const okWait = Date.now() + 20000;
      let firstOk;
      while (!firstOk && Date.now() < okWait) {
        firstOk = done.find((r) => r.status === 200 && r.start >= backAt);
        if (!firstOk) await sleep(20);
      }
      assert.ok(firstOk, "no 200 within 20 s of the restart");
      const resumedMs = firstOk.end - backAt;
      t.diagnostic(`first 200 ${resumedMs} ms after the restarted server answered health() (promised: ${PROMISED_MS} ms)`);
      assert.ok(resumedMs <= ALLOWED_MS, `200s resumed only ${resumedMs} ms after the restart`);
      // And they stay 200s.
      await sleep(500);
      const after = done.filter((r) => r.start >= firstOk.end);
      assert.ok(after.length > 0 && after.every((r) => r.status === 200), JSON.stringify(after.filter((r) => r.status !== 200).slice(0, 3)));
    } finally {
      running = false;
      await Promise.all(loops);
      agent.destroy();
    }
  });
});
