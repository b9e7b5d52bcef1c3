"use strict";
/**
 * Load shedding before Express (src/admission.js), as a real bridge process
 * in front of a real expertd over real HTTP: a burst beyond the limit on
 * requests in flight is answered 503 Overloaded (with Retry-After) at once
 * for the excess and 200 for the rest, the shed requests never reach the
 * server (its counting expert says how many inputs it computed), /healthz is
 * never shed, and the next request after the burst is admitted again.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { startExpertd, startBridge } = require("./helpers");
const { CATALOGUE } = require("../src/errors");

const LIMIT = 4;
const BURST = 12;

async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe("bridge process: shedding beyond ADMIT_MAX_IN_FLIGHT", { timeout: 180000 }, () => {
  let expertd;
  let bridge;
  let base;

  before(async () => {
    expertd = await startExpertd({ config: path.join(__dirname, "shed_experts.yaml") });
    bridge = startBridge({
      HOST: "127.0.0.1",
      PORT: "0",
      EXPERTD_ENDPOINT: expertd.endpoint,
      RPC_TIMEOUT: "30",
      ADMIT_MAX_IN_FLIGHT: String(LIMIT),
      ADMIT_ADAPTIVE: "false", // a fixed limit: the test counts
      ADMIT_MAX_LAG_MS: "0", // a slow machine's lag must not shed the admitted ones
    });
    base = await bridge.ready;
  });

  after(async () => {
    if (bridge && bridge.proc.exitCode === null) bridge.proc.kill("SIGKILL");
    if (expertd) await expertd.stop();
  });

  it("a burst: the excess is 503 Overloaded at once, the rest 200, the shed never reach the server; then it recovers", async () => {
    const order = [];
    const burst = Array.from({ length: BURST }, (_, i) => post(`${base}/experts/counting`, { text: `burst ${i}` }).then((res) => {
      order.push(res.status);
      return res;
    }));
    // While the admitted requests are in flight (the expert sleeps 3 s), the
    // excess has been answered and the health check is never shed.
    const overloaded = CATALOGUE.Overloaded.status;
    while (order.filter((s) => s === overloaded).length < BURST - LIMIT && order.length < BURST) await new Promise((r) => setTimeout(r, 10));
    // Nor is a GET (the page, its document): they bring no work for the experts.
    for (const path of ["/healthz", "/openapi.json", "/"]) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 200, `GET ${path} during the burst`);
      await res.arrayBuffer();
    }
    const answers = await Promise.all(burst);

    const ok = answers.filter((r) => r.status === 200);
    const shed = answers.filter((r) => r.status !== 200);
    assert.equal(ok.length, LIMIT, JSON.stringify(answers.map((r) => r.status)));
    assert.equal(shed.length, BURST - LIMIT);
    for (const r of shed) {
      assert.equal(r.status, overloaded);
      assert.equal(r.body.error.name, "Overloaded");
      assert.equal(r.body.error.status, overloaded);
      assert.match(r.body.error.message, /retry/);
      assert.match(r.headers.get("retry-after") || "", /^\d+$/);
    }
    // At once: every shed answer came before the first 200 (which waits for the expert's 3 s).
    assert.deepEqual(order.slice(0, BURST - LIMIT), Array(BURST - LIMIT).fill(overloaded));

    // The shed requests never reached the server: it computed exactly the admitted ones...
    assert.equal(Math.max(...ok.map((r) => r.body.computed)), LIMIT);
    // ... and the bridge is back to admitting as soon as the burst is over.
    const next = await post(`${base}/experts/counting`, { text: "after the burst" });
    assert.equal(next.status, 200, JSON.stringify(next.body));
    assert.equal(next.body.computed, LIMIT + 1);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, new RegExp(`^expertd_bridge_shed_total\\{reason="in_flight"\\} ${BURST - LIMIT}$`, "m"));
  });
});
