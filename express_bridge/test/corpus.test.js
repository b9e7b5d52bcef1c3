"use strict";
/**
 * The corpus of hostile and malformed HTTP requests (test/corpus/requests.json)
 * against the bridge as it runs (src/server.js `start`, real HTTP, a real
 * expertd): each gets its JSON error, never a 5xx, and the bridge's log stays
 * one JSON object per line, with control characters of expert names escaped.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const net = require("node:net");
const path = require("node:path");
const { Writable } = require("node:stream");
const pino = require("pino");
const { start } = require("../src/server");
const { loadConfig } = require("../src/config");
const { CONTROL_RE } = require("../src/middleware");
const { startExpertd } = require("./helpers");

const CORPUS = require(path.join(__dirname, "corpus", "requests.json")).cases;

/** The body of a case as bytes (see the corpus's _comment). */
function bodyOf(c) {
  if (c.body === undefined) return null;
  if (typeof c.body === "string") return Buffer.from(c.body);
  if (c.body && typeof c.body.nest === "number") {
    const b = c.body;
    return Buffer.from((b.prefix || "") + b.open.repeat(b.nest) + b.leaf + "a".repeat(b.pad || 0) + b.close.repeat(b.nest) + (b.suffix || ""));
  }
  return Buffer.from(JSON.stringify(c.body));
}

function send(url, c) {
  const body = bodyOf(c);
  const headers = { ...(c.headers || {}) };
  if (body !== null && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
  if (body !== null) headers["content-length"] = body.length;
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${c.path}`, { method: c.method, headers }, (res) => {
      const chunks = [];
      res.on("data", (d) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode, type: res.headers["content-type"] || "", text: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function sendRaw(port, raw) {
  const bytes = raw.replace(/\{\{A\*(\d+)\}\}/g, (_, n) => "A".repeat(Number(n)));
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end(bytes));
    let text = "";
    socket.on("data", (d) => (text += d));
    socket.on("error", reject);
    socket.on("close", () => {
      const [head, ...rest] = text.split("\r\n\r\n");
      const status = Number((/^HTTP\/1\.1 (\d{3})/.exec(head) || [])[1]);
      resolve({ status, type: (/content-type: *([^\r\n]*)/i.exec(head) || [])[1] || "", text: rest.join("\r\n\r\n") });
    });
  });
}

describe("hostile HTTP requests (test/corpus/requests.json)", { timeout: 180000 }, () => {
  let expertd;
  let bridge;
  const rawLines = [];

  before(async () => {
    expertd = await startExpertd();
    const stream = new Writable({
      write(chunk, _enc, cb) {
        rawLines.push(...chunk.toString().split("\n").filter((l) => l !== ""));
        cb();
      },
    });
    const config = loadConfig({ ADMIT_MAX_LAG_MS: "0", EXPERTD_ENDPOINT: expertd.endpoint, PORT: "0", LOG_LEVEL: "info" });
    bridge = await start(config, { logger: pino({ level: "info" }, stream) });
  });

  after(async () => {
    if (bridge) await bridge.close();
    if (expertd) await expertd.stop();
  });

  for (const c of CORPUS) {
    it(`${c.name}: ${c.status}${c.error ? ` ${c.error}` : ""}`, async () => {
      const before = rawLines.length;
      const res = c.raw ? await sendRaw(bridge.server.address().port, c.raw) : await send(bridge.url, c);
      assert.equal(res.status, c.status, `${res.status} ${res.text.slice(0, 300)}`);
      assert.match(res.type, /^application\/json/, "a JSON answer");
      const body = JSON.parse(res.text);
      if (c.status >= 400) {
        assert.equal(body.error.status, c.status);
        if (c.error) assert.equal(body.error.name, c.error, body.error.message);
        assert.ok(body.error.message.length > 0);
        assert.doesNotMatch(body.error.message, /\/work\/|node_modules|\n {4}at /, "no paths or stack traces");
      }
      if (c.logExpert) {
        assert.match(body.error.message, /expert names hold no control characters/);
        await new Promise((r) => setImmediate(r));
        const mine = rawLines.slice(before).map((l) => JSON.parse(l)).filter((l) => l.status === c.status && l.route);
        assert.equal(mine.length, 1, "one access log line");
        for (const value of Object.values(mine[0])) {
          if (typeof value === "string") assert.doesNotMatch(value, CONTROL_RE, "control characters escaped");
        }
      }
    });
  }

  it("every log line the bridge wrote is one JSON object; none is forged", () => {
    assert.ok(rawLines.length > 0);
    for (const line of rawLines) {
      assert.doesNotMatch(line, /[\u2028\u2029]/);
      const entry = JSON.parse(line);
      assert.notEqual(entry.msg, "pwned");
      assert.ok(entry.level <= 50, `no fatal lines: ${line}`);
    }
  });

  it("the bridge still answers a normal request", async () => {
    const res = await send(bridge.url, { method: "POST", path: "/experts/vader", body: { text: "What a lovely day" } });
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(res.text).label, "positive");
  });
});
