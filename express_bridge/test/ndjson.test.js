"use strict";
/**
 * POST /experts/:name/stream against a real bridge (real HTTP server) and a
 * real expertd (tests/odd_experts.yaml: no TensorFlow): order, bad lines,
 * over-long lines, a stream far larger than BODY_LIMIT, answers that arrive
 * before the input ends, and a client that reads slowly (backpressure).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const pino = require("pino");
const { loadConfig } = require("../src/config");
const { start } = require("../src/server");
const { LineSplitter } = require("../src/ndjson");
const { startExpertd, REPO_ROOT, sleep } = require("./helpers");

const ODD_CONFIG = path.join(REPO_ROOT, "tests", "odd_experts.yaml");
const CORPUS = path.join(__dirname, "corpus", "ndjson");

/** POST a body (string/Buffer) to the stream route; resolves {status, headers, body}. */
function post(url, body, { type = "application/x-ndjson" } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { "Content-Type": type } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Server-side counters of one expert (through the bridge's GET /stats). */
async function itemsAnswered(url, name) {
  const res = await new Promise((resolve, reject) => {
    http.get(`${url}/stats`, (r) => {
      let text = "";
      r.on("data", (c) => (text += c));
      r.on("end", () => resolve(JSON.parse(text)));
    }).on("error", reject);
  });
  return res.experts[name].items;
}

describe("NDJSON streaming", { timeout: 240000 }, () => {
  let server;
  let bridge;
  const BODY_LIMIT = 4096;

  before(async () => {
    server = await startExpertd({ config: ODD_CONFIG });
    const config = loadConfig({ ADMIT_MAX_LAG_MS: "0", EXPERTD_ENDPOINT: server.endpoint, PORT: "0", BODY_LIMIT: String(BODY_LIMIT), LOG_LEVEL: "silent" });
    bridge = await start(config, { logger: pino({ level: "silent" }) });
  });

  after(async () => {
    if (bridge) await bridge.close();
    if (server) await server.stop();
  });

  it("answers every line in order; bad lines come back as errors naming the line", async () => {
    const input = fs.readFileSync(path.join(CORPUS, "mixed.ndjson"));
    const { kinds } = JSON.parse(fs.readFileSync(path.join(CORPUS, "mixed.expected.json"), "utf8"));
    const res = await post(`${bridge.url}/experts/shouting/stream`, input);
    assert.equal(res.status, 200);
    assert.match(res.headers["content-type"], /^application\/x-ndjson/);
    const out = res.body.split("\n");
    assert.equal(out.pop(), "", "ends with a newline");
    assert.equal(out.length, kinds.length, "one line out per line in");
    kinds.forEach((kind, i) => {
      const where = `line ${i + 1}: ${out[i].slice(0, 200)}`;
      if (kind === "blank") return assert.equal(out[i], "", where);
      const got = JSON.parse(out[i]);
      if (kind === "line") {
        assert.equal(got.line, i + 1, where);
        assert.equal(got.error.name, "InvalidDocument", where);
        assert.match(got.error.message, new RegExp(`^line ${i + 1}: `), where);
      } else if (kind === "ok") {
        assert.equal(typeof got.opinions.shouting.ratio, "number", where);
        assert.equal(got.errors, undefined, where);
      } else {
        assert.equal(got.errors.shouting.name, kind.split(":")[1], where);
      }
    });
    const byId = Object.fromEntries(out.filter(Boolean).map((l) => JSON.parse(l)).filter((d) => d.id).map((d) => [d.id, d]));
    assert.equal(byId[1].opinions.shouting.ratio, 0.5);
    assert.deepEqual(byId[17].opinions.other, { x: 1 }, "opinions already there are kept");
    assert.equal(byId[16].text, "DUP");
  });

  it("names the line of an over-long line, and goes on", async () => {
    const big = JSON.stringify({ id: 2, text: "x".repeat(BODY_LIMIT * 3) });
    const input = `${JSON.stringify({ id: 1, text: "A" })}\n${big}\n${JSON.stringify({ id: 3, text: "b" })}`;
    const res = await post(`${bridge.url}/experts/shouting/stream`, input);
    const out = res.body.trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(out.length, 3);
    assert.equal(out[0].opinions.shouting.ratio, 1);
    assert.deepEqual(out[1].line, 2);
    assert.match(out[1].error.message, /^line 2: document is \d+ bytes, over the limit of 4096 bytes/);
    assert.equal(out[2].id, 3, "the last line needs no newline");
    assert.equal(out[2].opinions.shouting.ratio, 0);
  });

  it("takes a stream far larger than BODY_LIMIT", async () => {
    const n = 5000;
    const input = Array.from({ length: n }, (_, i) => JSON.stringify({ id: i, text: i % 2 ? "LOUD" : "quiet" })).join("\n");
    assert.ok(input.length > 20 * BODY_LIMIT);
    const res = await post(`${bridge.url}/experts/shouting/stream`, input);
    const out = res.body.trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(out.length, n);
    out.forEach((d, i) => {
      assert.equal(d.id, i);
      assert.equal(d.opinions.shouting.ratio, i % 2 ? 1 : 0);
    });
  });

  it("answers as it goes: a line is answered before the input ends", async () => {
    const url = new URL(`${bridge.url}/experts/shouting/stream`);
    const req = http.request(url, { method: "POST", headers: { "Content-Type": "application/x-ndjson" } });
    const response = new Promise((resolve) => req.on("response", resolve));
    req.write(`${JSON.stringify({ id: 1, text: "HEY" })}\n`);
    const res = await response;
    const first = await new Promise((resolve) => res.once("data", (c) => resolve(c.toString())));
    assert.deepEqual(JSON.parse(first), { id: 1, text: "HEY", opinions: { shouting: { ratio: 1 } } });
    req.end(`${JSON.stringify({ id: 2, text: "ho" })}\n`);
    let rest = "";
    for await (const c of res) rest += c;
    assert.equal(JSON.parse(rest).id, 2);
  });

  it("a client that reads slowly stops the bridge from reading ahead (backpressure), and still gets every line", async () => {
    const n = 200000;
    const doc = (i) => `${JSON.stringify({ id: i, text: "Some words HERE" })}\n`;
    const before = await itemsAnswered(bridge.url, "shouting");
    const url = new URL(`${bridge.url}/experts/shouting/stream`);
    const req = http.request(url, { method: "POST", headers: { "Content-Type": "application/x-ndjson" } });
    let res = null;
    req.on("response", (r) => {
      res = r;
      r.pause(); // read nothing for now
    });
    let sent = 0;
    let writerDone = false;
    const writer = (async () => {
      while (sent < n) {
        let chunk = "";
        for (let k = 0; k < 500 && sent < n; k += 1) chunk += doc(sent++);
        if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
      }
      req.end();
      writerDone = true;
    })();
    // While nobody reads, the server answers only what the socket buffers hold.
    const deadline = Date.now() + 60000;
    let stalled = null;
    let last = -1;
    while (Date.now() < deadline) {
      await sleep(1000);
      const answered = (await itemsAnswered(bridge.url, "shouting")) - before;
      if (answered === last && res) {
        stalled = answered;
        break;
      }
      last = answered;
    }
    assert.notEqual(stalled, null, "the bridge kept answering a client that reads nothing");
    assert.ok(stalled < n / 2, `answered ${stalled} of ${n} lines while the client read nothing`);
    assert.equal(writerDone, false, "the writer is held back too");
    // Now read: every line comes, in order.
    res.resume();
    let count = 0;
    const splitter = new LineSplitter(1 << 20);
    for await (const chunk of res) {
      for (const line of splitter.push(chunk)) {
        const d = JSON.parse(line.bytes.toString());
        assert.equal(d.id, count, "in order");
        count += 1;
      }
    }
    await writer;
    assert.equal(count, n);
  });

  it("415 for another content type, 404 for an unknown expert", async () => {
    const wrong = await post(`${bridge.url}/experts/shouting/stream`, '{"text": "x"}\n', { type: "application/json" });
    assert.equal(wrong.status, 415);
    assert.equal(JSON.parse(wrong.body).error.name, "UnsupportedMediaType");
    const unknown = await post(`${bridge.url}/experts/nosuch/stream`, '{"text": "x"}\n');
    assert.equal(unknown.status, 404);
    const err = JSON.parse(unknown.body).error;
    assert.equal(err.name, "UnknownExpert");
    assert.match(err.message, /this server runs: .*shouting/);
  });
});
