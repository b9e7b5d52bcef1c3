"use strict";
/**
 * Coalescing of POST /experts/:name against a REAL expertd (test/experts.yaml):
 * concurrent requests for one expert become fewer `opinions_batch` RPC calls
 * (counted by the server's own stats()), yet every caller gets exactly the
 * answer, or the error, it would get alone. The bridge app listens on a real
 * port and the bursts go over HTTP keep-alive connections, as a load
 * generator's would.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { startExpertd } = require("./helpers");
const { CATALOGUE } = require("../src/errors");

const MAX_TEXT_BYTES = 2000; // the server's TextTooLong limit in these tests

const WORDS = ["wonderful", "awful", "boring", "brilliant", "sad", "happy", "terrible", "great", "dull", "lovely", "meh", "fine"];
/** n different texts, of mixed sentiment. */
function texts(n, seed = 0) {
  return Array.from({ length: n }, (_, i) => {
    const a = WORDS[(i + seed) % WORDS.length];
    const b = WORDS[(i * 7 + seed + 3) % WORDS.length];
    return `Text ${seed}-${i}: the film was ${a}, and the ending ${b}${i % 3 ? "!" : "."}`;
  });
}

/** Opinions equal up to float noise (the model may run them in another batch shape). */
function assertSameOpinion(actual, expected, what) {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), what);
  for (const [k, v] of Object.entries(expected)) {
    if (typeof v === "number") assert.ok(Math.abs(actual[k] - v) < 1e-3, `${what}: ${k} ${actual[k]} vs ${v}`);
    else assert.deepEqual(actual[k], v, `${what}: ${k}`);
  }
}

describe("coalescing POST /experts/:name against a real expertd", { timeout: 240000 }, () => {
  let server;
  const bridges = [];

  /** A client + app listening on a free port; `batches` collects the size of every RPC call sent for opinion(). */
  async function startBridge(coalesce = {}, rpcOptions = {}) {
    const rpc = new ExpertdClient({ endpoint: server.endpoint, timeoutMs: 20000, coalesce, ...rpcOptions });
    const batches = [];
    rpc.on("batch", (name, size) => batches.push([name, size]));
    const app = createApp({ rpc, bodyLimit: "64kb" });
    const httpServer = http.createServer(app);
    await new Promise((r) => httpServer.listen(0, "127.0.0.1", r));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
    const url = `http://127.0.0.1:${httpServer.address().port}`;
    const bridge = { rpc, app, httpServer, agent, url, batches };
    bridges.push(bridge);
    await rpc.probe();
    return bridge;
  }

  /** POST JSON over the bridge's keep-alive agent -> {status, body}. */
  function post(bridge, path, body) {
    const data = Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        `${bridge.url}${path}`,
        { method: "POST", agent: bridge.agent, headers: { "Content-Type": "application/json", "Content-Length": data.length } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
        },
      );
      req.on("error", reject);
      req.end(data);
    });
  }

  /** Open `n` keep-alive connections first, so that a burst is not slowed by connects. */
  async function warm(bridge, n) {
    await Promise.all(Array.from({ length: n }, () => post(bridge, "/experts/vader", { text: "warm up" })));
  }

  async function sentimentStats(rpc) {
    const s = await rpc.stats();
    return { calls: s.experts.sentiment.calls, items: s.experts.sentiment.items };
  }

  before(async () => {
    server = await startExpertd({ args: ["--max-text-bytes", String(MAX_TEXT_BYTES)] });
  });

  after(async () => {
    for (const b of bridges) {
      b.agent.destroy();
      await new Promise((r) => b.httpServer.close(r));
      await b.rpc.close();
    }
    if (server) await server.stop();
  });

  it("64 concurrent requests each get their own opinion, in fewer RPC calls than requests", async () => {
    const bridge = await startBridge();
    const docs = texts(64).map((text) => ({ text }));
    // One at a time first: each request alone is a plain opinion() call.
    const alone = [];
    for (const doc of docs) {
      const res = await post(bridge, "/experts/sentiment", doc);
      assert.equal(res.status, 200);
      alone.push(res.body);
    }
    assert.ok(bridge.batches.every(([, size]) => size === 1), "a request alone is not batched");
    await warm(bridge, 64);
    bridge.batches.length = 0;

    const before = await sentimentStats(bridge.rpc);
    const burst = await Promise.all(docs.map((doc) => post(bridge, "/experts/sentiment", doc)));
    const after = await sentimentStats(bridge.rpc);

    burst.forEach((res, i) => {
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assertSameOpinion(res.body, alone[i], `doc ${i}`);
    });
    const calls = after.calls - before.calls;
    assert.equal(after.items - before.items, 64, "every document reached the model once");
    assert.ok(calls < 64, `64 requests took ${calls} RPC calls`);
    assert.equal(bridge.batches.reduce((n, [, size]) => n + size, 0), 64);
    assert.equal(bridge.batches.length, calls, "the bridge's batch events match the server's call count");
    assert.ok(Math.max(...bridge.batches.map(([, size]) => size)) > 1);

    // The batch sizes are in /metrics.
    const metrics = await new Promise((resolve, reject) => {
      http.get(`${bridge.url}/metrics`, { agent: bridge.agent }, (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve(text));
      }).on("error", reject);
    });
    assert.match(metrics, /# TYPE expertd_bridge_coalesced_batch_size histogram/);
    const sum = Number(/^expertd_bridge_coalesced_batch_size_sum\{expert="sentiment"\} (\d+)$/m.exec(metrics)[1]);
    const count = Number(/^expertd_bridge_coalesced_batch_size_count\{expert="sentiment"\} (\d+)$/m.exec(metrics)[1]);
    assert.equal(sum, 128);
    assert.equal(count, 64 + calls);
  });

  it("in one coalesced burst, bad documents get their own 400/413 while the others get 200; merge works", async () => {
    const bridge = await startBridge();
    const reference = await startBridge({ maxBatch: 1 });
    const good = texts(24, 1).map((text) => ({ text }));
    const bad = [
      { doc: { text: 5 }, status: 400, name: "InvalidDocument" },
      { doc: { body: "no text here" }, status: 400, name: "InvalidDocument" },
      { doc: { text: "word ".repeat(MAX_TEXT_BYTES) }, status: 413, name: "TextTooLong" },
    ];
    // The errors a request gets alone, without coalescing.
    const aloneErrors = [];
    for (const b of bad) aloneErrors.push((await post(reference, "/experts/sentiment", b.doc)).body);
    const aloneGood = [];
    for (const doc of good) aloneGood.push((await post(reference, "/experts/sentiment", doc)).body);

    await warm(bridge, 32);
    bridge.batches.length = 0;
    const before = await sentimentStats(bridge.rpc);
    const requests = [
      ...good.slice(0, 12).map((doc) => post(bridge, "/experts/sentiment", doc)),
      ...bad.map((b) => post(bridge, "/experts/sentiment", b.doc)),
      ...good.slice(12).map((doc) => post(bridge, "/experts/sentiment?merge=true", { ...doc, id: "m", opinions: { earlier: 1 } })),
    ];
    const results = await Promise.all(requests);
    const after = await sentimentStats(bridge.rpc);
    assert.ok(after.calls - before.calls < requests.length, `${requests.length} requests took ${after.calls - before.calls} RPC calls`);
    assert.ok(Math.max(...bridge.batches.map(([, size]) => size)) > 1, JSON.stringify(bridge.batches));

    results.slice(0, 12).forEach((res, i) => {
      assert.equal(res.status, 200);
      assertSameOpinion(res.body, aloneGood[i], `good ${i}`);
    });
    bad.forEach((b, j) => {
      const res = results[12 + j];
      assert.equal(res.status, b.status, JSON.stringify(res.body));
      assert.equal(res.body.error.name, b.name);
      assert.deepEqual(res.body, aloneErrors[j], "the same error body as without coalescing");
    });
    results.slice(12 + bad.length).forEach((res, i) => {
      assert.equal(res.status, 200);
      assert.equal(res.body.id, "m");
      assert.equal(res.body.text, good[12 + i].text);
      assert.deepEqual(res.body.opinions.earlier, 1);
      assertSameOpinion(res.body.opinions.sentiment, aloneGood[12 + i], `merged ${i}`);
    });
  });

  it("a failing expert still gives 422 to every caller of a burst (and 400 to a bad document in it)", async () => {
    const bridge = await startBridge();
    const alone = await post(bridge, "/experts/failing", { text: "alone" });
    assert.equal(alone.status, 422);
    await warm(bridge, 16);
    bridge.batches.length = 0;
    const results = await Promise.all([
      ...Array.from({ length: 12 }, (_, i) => post(bridge, "/experts/failing", { text: `fail ${i}` })),
      post(bridge, "/experts/failing", { text: 7 }),
    ]);
    assert.ok(bridge.batches.some(([name, size]) => name === "failing" && size > 1), JSON.stringify(bridge.batches));
    for (const res of results.slice(0, 12)) {
      assert.equal(res.status, 422);
      assert.deepEqual(res.body, alone.body);
    }
    assert.equal(results[12].status, 400);
    assert.equal(results[12].body.error.name, "InvalidDocument");
  });

  it("unknown experts are 404 for every caller of a burst", async () => {
    const bridge = await startBridge();
    await warm(bridge, 8);
    const results = await Promise.all(Array.from({ length: 8 }, () => post(bridge, "/experts/nosuch", { text: "x" })));
    for (const res of results) {
      assert.equal(res.status, 404);
      assert.equal(res.body.error.name, "UnknownExpert");
      assert.match(res.body.error.message, /nosuch/);
    }
  });

  it("COALESCE_MAX=1 behaves as before: one opinion() call per request", async () => {
    const bridge = await startBridge({ maxBatch: 1 });
    const docs = texts(32, 2).map((text) => ({ text }));
    await warm(bridge, 32);
    bridge.batches.length = 0;
    const before = await sentimentStats(bridge.rpc);
    const results = await Promise.all(docs.map((doc) => post(bridge, "/experts/sentiment", doc)));
    const after = await sentimentStats(bridge.rpc);
    assert.equal(after.calls - before.calls, 32);
    assert.equal(after.items - before.items, 32);
    assert.ok(bridge.batches.every(([, size]) => size === 1));
    for (const res of results) {
      assert.equal(res.status, 200);
      assert.equal(typeof res.body.valence, "number");
    }
    const statuses = await Promise.all([
      post(bridge, "/experts/sentiment", { text: 5 }),
      post(bridge, "/experts/sentiment", { text: "word ".repeat(MAX_TEXT_BYTES) }),
      post(bridge, "/experts/failing", { text: "x" }),
      post(bridge, "/experts/nosuch", { text: "x" }),
    ]);
    assert.deepEqual(statuses.map((r) => [r.status, r.body.error.name]), [[400, "InvalidDocument"], [413, "TextTooLong"], [422, "ExpertFailed"], [404, "UnknownExpert"]]);
  });

  it("a request queued behind a hung batch still ends in 504 within its own timeout", async () => {
    const bridge = await startBridge({ inFlight: 1 }, { timeoutMs: 1000 });
    const first = post(bridge, "/experts/slow", { text: "first" });
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const second = await post(bridge, "/experts/slow", { text: "second" });
    const took = Date.now() - started;
    assert.equal(second.status, 504, JSON.stringify(second.body));
    assert.equal(second.body.error.name, "RpcTimeout");
    assert.ok(took >= 900 && took < 2500, `took ${took} ms`);
    assert.equal((await first).status, 504);
    // And the bridge goes on working.
    assert.equal((await post(bridge, "/experts/vader", { text: "I love it" })).status, 200);
  });

  it("one poisoned document in a burst fails only itself (the server isolates it; no one-by-one retries)", async () => {
    const bridge = await startBridge();
    await warm(bridge, 16);
    bridge.batches.length = 0;
    const docs = Array.from({ length: 12 }, (_, i) => ({ text: i === 5 ? "a poison pill" : `fine text ${i}` }));
    const results = await Promise.all(docs.map((doc) => post(bridge, "/experts/poison", doc)));
    assert.ok(bridge.batches.some(([name, size]) => name === "poison" && size > 1), JSON.stringify(bridge.batches));
    results.forEach((res, i) => {
      if (i === 5) {
        assert.equal(res.status, 422, JSON.stringify(res.body));
        assert.equal(res.body.error.name, "ExpertFailed");
      } else {
        assert.equal(res.status, 200, `document ${i}: ${JSON.stringify(res.body)}`);
        assert.deepEqual(res.body, { length: docs[i].text.length });
      }
    });
  });

  it("each request keeps its own deadline in a batch: an early member ends alone, the late-comers get answers", async (t) => {
    // inFlight 1: a first slow call (3 s) holds the pipe; request A (deadline 5.5 s) and
    // ten requests made at 1 s (deadline 21 s) wait behind it. When it is back (~3 s), A
    // has less time left than a call takes (~3 s): it is answered Overloaded, never sent
    // (no work for an answer nobody would read), and the ten leave together.
    const bridge = await startBridge({ inFlight: 1 }, { timeoutMs: 20000 });
    const first = bridge.rpc.opinion("slow", { text: "first" });
    await new Promise((r) => setTimeout(r, 50)); // first leaves alone
    const early = bridge.rpc.opinion("slow", { text: "early" }, { timeoutMs: 5500 }).then((v) => ({ ok: v }), (err) => ({ err }));
    await new Promise((r) => setTimeout(r, 1000));
    const late = Array.from({ length: 10 }, (_, i) => bridge.rpc.opinion("slow", { text: `late ${i}` }));
    assert.deepEqual(await first, { slept: 3 });
    const a = await early;
    assert.ok(a.err, `the early request got ${JSON.stringify(a.ok)} after its deadline`);
    assert.equal(a.err.name, "Overloaded", a.err.message);
    assert.equal(a.err.status, CATALOGUE.Overloaded.status);
    for (const answer of await Promise.all(late)) assert.deepEqual(answer, { slept: 3 });
    const sizes = bridge.batches.filter(([name]) => name === "slow").map(([, size]) => size);
    t.diagnostic(`batch sizes ${JSON.stringify(sizes)}`);
    assert.deepEqual(sizes, [1, 10], "the early request was never sent");
  });

  it("the server's Overloaded is 503 with Retry-After; the bridge's full queue is too, at once", async () => {
    const direct = await startBridge({ maxBatch: 1 });
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => post(direct, "/experts/narrow", { text: `n${i}` })));
    const statuses = results.map((r) => r.status).sort();
    assert.ok(statuses.includes(503), JSON.stringify(results));
    for (const res of results) {
      if (res.status === 503) assert.equal(res.body.error.name, "Overloaded", JSON.stringify(res.body));
      else assert.equal(res.status, 200, JSON.stringify(res.body));
    }

    const queued = await startBridge({ inFlight: 1, maxQueue: 2 });
    const busy = post(queued, "/experts/slow", { text: "busy" });
    await new Promise((r) => setTimeout(r, 200));
    const waiting = [post(queued, "/experts/slow", { text: "w1" }), post(queued, "/experts/slow", { text: "w2" })];
    await new Promise((r) => setTimeout(r, 200));
    const res = await new Promise((resolve, reject) => {
      const req = http.request(`${queued.url}/experts/slow`, { method: "POST", agent: queued.agent, headers: { "Content-Type": "application/json" } }, (r) => {
        let text = "";
        r.on("data", (c) => (text += c));
        r.on("end", () => resolve({ status: r.statusCode, retryAfter: r.headers["retry-after"], body: JSON.parse(text), at: Date.now() }));
      });
      req.on("error", reject);
      req.end(JSON.stringify({ text: "over" }));
    });
    assert.equal(res.status, 503);
    assert.equal(res.retryAfter, "1");
    assert.equal(res.body.error.name, "Overloaded");
    assert.match(res.body.error.message, /queue for expert "slow" is full/);
    for (const r of await Promise.all([busy, ...waiting])) assert.equal(r.status, 200);
  });
});
