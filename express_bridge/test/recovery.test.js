"use strict";
/**
 * The bridge as a real process (`node src/server.js`, what `npm start` runs)
 * over real HTTP, against a real expertd that the test stops and restarts on
 * the same port: 503 while it is down, 200 again within seconds after it is
 * back, 503 (not 504) for a call in flight when it dies, and a graceful
 * shutdown that lets an in-flight request finish.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { startExpertd, startBridge, freePort, sleep } = require("./helpers");

const RPC_TIMEOUT_S = 5; // > the slow expert's 3 s

async function post(url, body, headers = {}) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe("bridge process: server restarts and graceful shutdown", { timeout: 300000 }, () => {
  let expertd;
  let port;
  let bridge;
  let base;

  before(async () => {
    port = await freePort();
    expertd = await startExpertd({ port });
    bridge = startBridge({
      HOST: "127.0.0.1",
      PORT: "0",
      EXPERTD_ENDPOINT: expertd.endpoint,
      RPC_TIMEOUT: String(RPC_TIMEOUT_S),
      RPC_PROBE_TIMEOUT: "1",
      SHUTDOWN_TIMEOUT: "10",
    });
    base = await bridge.ready;
  });

  after(async () => {
    if (bridge && bridge.proc.exitCode === null) bridge.proc.kill("SIGKILL");
    if (expertd) await expertd.stop();
  });

  it("answers over real HTTP, with a request id and a log line", async () => {
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).server.pid, expertd.pid);
    const res = await post(`${base}/experts/vader`, { text: "What a lovely, happy day!" }, { "x-request-id": "e2e-1" });
    assert.equal(res.status, 200);
    assert.equal(res.body.label, "positive");
    assert.equal(res.headers.get("x-request-id"), "e2e-1");
    const form = await fetch(`${base}/experts/vader`, { method: "POST", body: new URLSearchParams({ text: "What a lovely, happy day!" }) });
    assert.equal(form.status, 200);
    assert.deepEqual(await form.json(), res.body);
    await sleep(50);
    const line = bridge.lines.find((l) => l.reqId === "e2e-1");
    assert.ok(line, "logged");
    assert.equal(line.status, 200);
    assert.equal(line.route, "/experts/:name");
  });

  it("a call in flight when the server dies ends in 503, not 504", async () => {
    // The slow expert sleeps 3 s; the server is killed (SIGKILL) during it.
    const inflight = post(`${base}/experts/slow`, { text: "zzz" });
    await sleep(500);
    await expertd.stop("SIGKILL");
    const res = await inflight;
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error.name, "ServerUnavailable");
  });

  it("503 while the server is down, quickly", async () => {
    const started = Date.now();
    const res = await post(`${base}/experts/vader`, { text: "hello" });
    assert.equal(res.status, 503);
    assert.equal(res.body.error.name, "ServerUnavailable");
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 503);
    assert.equal((await health.json()).status, "unavailable");
  });

  it("recovers by itself within seconds once the server is back on the same port", async (t) => {
    expertd = await startExpertd({ port });
    const back = Date.now();
    let res;
    do {
      res = await post(`${base}/experts/vader`, { text: "What a lovely, happy day!" });
      if (res.status === 200) break;
      await sleep(100);
    } while (Date.now() - back < 5000);
    assert.equal(res.status, 200, `still ${res.status} ${JSON.stringify(res.body)} after 5 s`);
    t.diagnostic(`first 200 ${Date.now() - back} ms after the restarted server answered health()`);
    assert.equal(res.body.label, "positive");
    const health = await (await fetch(`${base}/healthz`)).json();
    assert.equal(health.server.pid, expertd.pid, "talks to the new server");
    const tf = await post(`${base}/experts/sentiment`, { text: "What a lovely, happy day!" });
    assert.equal(tf.status, 200);
  });

  it("SIGTERM lets an in-flight request finish, then exits 0", async () => {
    const inflight = post(`${base}/experts/slow`, { text: "zzz" });
    await sleep(500);
    bridge.proc.kill("SIGTERM");
    const res = await inflight;
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await bridge.exited, { code: 0, signal: null });
    assert.ok(bridge.lines.some((l) => l.msg === "stopped"));
  });
});
