"use strict";
/**
 * Messages that say what to do, over real HTTP against a real expertd:
 * JSON that curl -d sent as a form (or a client sent with no Content-Type) is
 * read as JSON; a 413 names BODY_LIMIT (and for a batch, splitting or the
 * NDJSON stream); a server that stops answering is a 503 that says so, with
 * the spec's hint, well before zerorpc's 10 s of missed heartbeats, and the
 * bridge recovers when the server is back.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { ERRORS } = require("../src/spec");
const { startExpertd, freePort } = require("./helpers");

const HINT = ERRORS.ServerUnavailable.hint;
const CURL_FORM = "application/x-www-form-urlencoded"; // what curl -d sends
/** Well below zerorpc's 10 s (two missed heartbeats): a bridge that waits for those fails the test. */
const CLIENT_ABORT_MS = 5000;

/**
 * Send one request over real HTTP with exactly the headers given (no
 * Content-Type unless given), as curl does.
 * @returns {Promise<{status: number, body: any}>}
 */
function send(base, method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(body);
    const req = http.request(`${base}${urlPath}`, {
      method,
      headers: { ...headers, ...(data ? { "content-length": data.length } : {}) },
      signal: AbortSignal.timeout(CLIENT_ABORT_MS),
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode, body: text ? JSON.parse(text) : undefined });
      });
    });
    req.on("error", reject);
    req.end(data);
  });
}

/** An http.Server for `app` on a free port. @returns {Promise<{base: string, close: () => Promise<void>}>} */
async function listen(app) {
  const server = http.createServer(app);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe("messages that say what to do", { timeout: 180000 }, () => {
  let expertd;
  let config;
  const cleanups = [];

  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "expertd-messages-"));
    config = path.join(dir, "experts.yaml");
    fs.writeFileSync(config, "experts:\n  vader: expertd.experts.vader:VaderExpert\n");
    expertd = await startExpertd({ config });
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    if (expertd) {
      try {
        process.kill(expertd.pid, "SIGCONT");
      } catch {
        /* gone */
      }
      await expertd.stop();
    }
  });

  /** A bridge (real client, real HTTP) in front of `endpoint`. */
  async function bridge({ endpoint = expertd.endpoint, bodyLimit = "64kb" } = {}) {
    const rpc = new ExpertdClient({ endpoint, probeTimeoutMs: 1000 });
    const server = await listen(createApp({ rpc, bodyLimit }));
    cleanups.push(async () => {
      await server.close();
      await rpc.close();
    });
    return server.base;
  }

  describe("JSON sent without Content-Type: application/json", () => {
    let base;
    before(async () => {
      base = await bridge();
    });

    it("curl -d '{\"text\": ...}' (a form Content-Type) is read as the JSON document it is", async () => {
      const json = await send(base, "POST", "/experts/vader", JSON.stringify({ text: "I love it" }), { "content-type": "application/json" });
      assert.equal(json.status, 200, JSON.stringify(json.body));
      const curl = await send(base, "POST", "/experts/vader", '{"text": "I love it"}', { "content-type": CURL_FORM });
      assert.equal(curl.status, 200, JSON.stringify(curl.body));
      assert.deepEqual(curl.body, json.body);
      const merged = await send(base, "POST", "/experts/vader?merge=true", '{"id": 7, "text": "I love it"}', { "content-type": CURL_FORM });
      assert.equal(merged.body.id, 7);
    });

    it("a body with no Content-Type at all is read as JSON too", async () => {
      const res = await send(base, "POST", "/experts/vader", '{"text": "I love it"}');
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.label, "positive");
    });

    it("a JSON array sent by curl -d to /batch is a batch", async () => {
      const res = await send(base, "POST", "/experts/vader/batch", '[{"text": "I love it"}, {"text": "I hate it"}]', { "content-type": CURL_FORM });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.map((o) => o.label), ["positive", "negative"]);
    });

    it("JSON that does not parse is 400 MalformedJSON saying how to send JSON", async () => {
      const res = await send(base, "POST", "/experts/vader", '{"text": "unterminated', { "content-type": CURL_FORM });
      assert.equal(res.status, 400);
      assert.equal(res.body.error.name, "MalformedJSON");
      assert.match(res.body.error.message, /Content-Type: application\/json/);
      assert.match(res.body.error.message, /--json/);
    });

    it("a real form still works where forms are taken, and elsewhere is 415 saying how to send JSON", async () => {
      const form = await send(base, "POST", "/experts/vader", "text=I+love+it", { "content-type": CURL_FORM });
      assert.equal(form.status, 200, JSON.stringify(form.body));
      assert.equal(form.body.label, "positive");
      const batch = await send(base, "POST", "/experts/vader/batch", "text=x", { "content-type": CURL_FORM });
      assert.equal(batch.status, 415);
      assert.equal(batch.body.error.name, "UnsupportedMediaType");
      assert.match(batch.body.error.message, /-H 'Content-Type: application\/json' or --json/);
    });

    it("the depth limit holds for JSON sent as a form", async () => {
      const deep = `{"text": "x", "a": ${"[".repeat(100)}${"]".repeat(100)}}`;
      const res = await send(base, "POST", "/experts/vader", deep, { "content-type": CURL_FORM });
      assert.equal(res.status, 400);
      assert.equal(res.body.error.name, "InvalidDocument");
      assert.match(res.body.error.message, /nests deeper than 64 levels/);
    });
  });

  describe("413 names the limit and the setting", () => {
    let base;
    before(async () => {
      base = await bridge({ bodyLimit: 1024 });
    });

    it("a document over BODY_LIMIT: the limit in bytes and BODY_LIMIT=...", async () => {
      const res = await send(base, "POST", "/experts/vader", JSON.stringify({ text: "a".repeat(2000) }), { "content-type": "application/json" });
      assert.equal(res.status, 413);
      assert.equal(res.body.error.name, "PayloadTooLarge");
      assert.match(res.body.error.message, /1024 bytes/);
      assert.match(res.body.error.message, /BODY_LIMIT=\d+kb/);
    });

    it("a batch over BODY_LIMIT: also splitting it, or the NDJSON stream endpoint", async () => {
      const docs = Array.from({ length: 40 }, (_, i) => ({ text: `document number ${i}` }));
      const res = await send(base, "POST", "/experts/vader/batch", JSON.stringify(docs), { "content-type": "application/json" });
      assert.equal(res.status, 413);
      assert.match(res.body.error.message, /BODY_LIMIT=/);
      assert.match(res.body.error.message, /split/);
      assert.match(res.body.error.message, /POST \/experts\/vader\/stream/);
    });
  });

  describe("no server answers", () => {
    it("nothing listens: 503 ServerUnavailable with the spec's hint", async () => {
      const base = await bridge({ endpoint: `tcp://127.0.0.1:${await freePort()}` });
      const res = await send(base, "POST", "/experts/vader", JSON.stringify({ text: "hi" }), { "content-type": "application/json" });
      assert.equal(res.status, 503);
      assert.equal(res.body.error.name, "ServerUnavailable");
      assert.ok(res.body.error.message.includes(HINT), res.body.error.message);
    });

    it("a server that stops answering mid-life: 503 with the hint before the client gives up, then 200 once it is back", async () => {
      const base = await bridge();
      const json = { "content-type": "application/json" };
      const ok = await send(base, "POST", "/experts/vader", JSON.stringify({ text: "I love it" }), json);
      assert.equal(ok.status, 200); // the bridge is connected: its state is "up"
      process.kill(expertd.pid, "SIGSTOP"); // still accepts TCP, answers nothing
      let res;
      try {
        res = await send(base, "POST", "/experts/vader", JSON.stringify({ text: "hello" }), json);
      } finally {
        process.kill(expertd.pid, "SIGCONT");
      }
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(res.body.error.name, "ServerUnavailable");
      assert.ok(res.body.error.message.includes(HINT), res.body.error.message);
      // Back: answered again (the bridge probes before each call while it thinks the server is down).
      let again;
      for (let i = 0; i < 40; i++) {
        again = await send(base, "POST", "/experts/vader", JSON.stringify({ text: "I love it" }), json);
        if (again.status === 200) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(again.status, 200, JSON.stringify(again.body));
      assert.equal(again.body.label, "positive");
    });
  });
});
