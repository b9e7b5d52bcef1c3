"use strict";
/**
 * The HTTP API against a REAL expertd (test/experts.yaml): every route and
 * every error status, driven in-process with supertest through createApp.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const request = require("supertest");
const pino = require("pino");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { startExpertd, logCapture } = require("./helpers");

const MAX_TEXT_BYTES = 2000; // the server's TextTooLong limit in these tests
const POSITIVE = "I love this wonderful, beautiful day. Great job, thank you!";

describe("express bridge against a real expertd", { timeout: 240000 }, () => {
  let server;
  let rpc;
  let app;
  let logs;
  const clients = [];

  /** A separate client + app, e.g. with another timeout or a token. */
  function makeApp({ rpcOptions = {}, appOptions = {} } = {}) {
    const c = new ExpertdClient({ endpoint: server.endpoint, probeTimeoutMs: 1000, ...rpcOptions });
    clients.push(c);
    return createApp({ rpc: c, ...appOptions });
  }

  before(async () => {
    server = await startExpertd({ args: ["--max-text-bytes", String(MAX_TEXT_BYTES)] });
    rpc = new ExpertdClient({ endpoint: server.endpoint, timeoutMs: 20000 });
    clients.push(rpc);
    logs = logCapture();
    app = createApp({ rpc, logger: pino({ level: "info" }, logs.stream), bodyLimit: "64kb" });
  });

  after(async () => {
    for (const c of clients) await c.close();
    if (server) await server.stop();
  });

  describe("GET /healthz and GET /experts", () => {
    it("/healthz is 200 with the server's health", async () => {
      const res = await request(app).get("/healthz").expect(200).expect("Content-Type", /json/);
      assert.equal(res.body.status, "ok");
      assert.equal(res.body.server.status, "ok");
      assert.deepEqual([...res.body.server.experts].sort(), ["failing", "narrow", "poison", "sentiment", "slow", "vader"]);
      assert.equal(typeof res.body.server.pid, "number");
      assert.equal(res.body.server.pid, server.pid);
      assert.equal(typeof res.body.server.uptime_s, "number");
      assert.equal(typeof res.body.server.version, "string");
    });

    it("a flood of /healthz, /experts and /openapi.json costs the server one call, not one per request", async () => {
      const flooded = makeApp(); // its own metrics: every RPC it makes is counted there
      const rpcCount = async (method) => {
        const text = (await request(flooded).get("/metrics").expect(200)).text;
        const found = text.match(new RegExp(`expertd_bridge_rpc_duration_seconds_count\\{method="${method}",outcome="ok"\\} (\\d+)`));
        return found ? Number(found[1]) : 0;
      };
      const flood = (path) => Promise.all(Array.from({ length: 100 }, () => request(flooded).get(path)));
      for (const res of await flood("/healthz")) assert.equal(res.status, 200);
      for (const res of [...(await flood("/experts")), ...(await flood("/openapi.json"))]) assert.equal(res.status, 200);
      // One call each when the 100 arrive within 200 ms; a slow machine may straggle over a few.
      assert.ok((await rpcCount("health")) <= 10, `health() calls: ${await rpcCount("health")}`);
      assert.ok((await rpcCount("experts")) <= 10, `experts() calls: ${await rpcCount("experts")}`);
      // Each answer is the server's own.
      const health = (await request(flooded).get("/healthz").expect(200)).body;
      assert.equal(health.server.pid, server.pid);
    });

    it("/experts lists every expert with its description and batching", async () => {
      const res = await request(app).get("/experts").expect(200);
      assert.ok(Array.isArray(res.body));
      const byName = Object.fromEntries(res.body.map((e) => [e.name, e]));
      assert.deepEqual(Object.keys(byName).sort(), ["failing", "narrow", "poison", "sentiment", "slow", "vader"]);
      for (const e of res.body) {
        assert.equal(typeof e.version, "string");
        assert.equal(typeof e.description, "string");
        assert.equal(e.field, "text");
        assert.equal(typeof e.metrics, "object");
        assert.equal(typeof e.batch.max_size, "number");
        assert.equal(typeof e.batch.max_wait_ms, "number");
      }
    });
  });

  describe("POST /experts/:name", () => {
    it("returns the sentiment opinion of a JSON document", async () => {
      const res = await request(app).post("/experts/sentiment").send({ text: POSITIVE }).expect(200);
      assert.equal(typeof res.body.valence, "number");
      assert.equal(typeof res.body.label, "string");
      assert.equal(typeof res.body.confidence, "number");
      assert.ok(res.body.confidence >= 0 && res.body.confidence <= 1, `confidence ${res.body.confidence}`);
    });

    it("returns the vader opinion, positive for a positive text", async () => {
      const res = await request(app).post("/experts/vader").send({ text: POSITIVE }).expect(200);
      for (const k of ["compound", "pos", "neu", "neg"]) assert.equal(typeof res.body[k], "number", k);
      assert.equal(res.body.label, "positive");
      assert.ok(res.body.compound > 0.5, `compound ${res.body.compound}`);
    });

    it("accepts a form-encoded body (curl -d text=...)", async () => {
      const form = await request(app).post("/experts/vader").type("form").send(`text=${encodeURIComponent(POSITIVE)}`).expect(200);
      const json = await request(app).post("/experts/vader").send({ text: POSITIVE }).expect(200);
      assert.deepEqual(form.body, json.body);
    });

    it("keeps non-ASCII text intact", async () => {
      const text = "Ça marche très bien 😀 — 素晴らしい";
      const res = await request(app).post("/experts/vader?merge=true").send({ text }).expect(200);
      assert.equal(res.body.text, text);
    });

    it("?merge=true returns the document with the opinion under opinions.<name>", async () => {
      const doc = { id: 42, text: POSITIVE, meta: { source: "test" }, opinions: { earlier: { x: 1 } } };
      const res = await request(app).post("/experts/vader?merge=true").send(doc).expect(200);
      const plain = await request(app).post("/experts/vader").send(doc).expect(200);
      assert.equal(res.body.id, 42);
      assert.deepEqual(res.body.meta, { source: "test" });
      assert.deepEqual(res.body.opinions.earlier, { x: 1 });
      assert.deepEqual(res.body.opinions.vader, plain.body);
    });

    it("?merge=false and a bad merge value", async () => {
      const res = await request(app).post("/experts/vader?merge=false").send({ text: POSITIVE }).expect(200);
      assert.equal(res.body.opinions, undefined);
      const bad = await request(app).post("/experts/vader?merge=maybe").send({ text: POSITIVE }).expect(400);
      assert.equal(bad.body.error.name, "BadRequest");
    });

    it("404 UnknownExpert for an expert the server does not run", async () => {
      const res = await request(app).post("/experts/nosuch").send({ text: "x" }).expect(404).expect("Content-Type", /json/);
      assert.deepEqual(Object.keys(res.body), ["error"]);
      assert.equal(res.body.error.name, "UnknownExpert");
      assert.equal(res.body.error.status, 404);
      assert.match(res.body.error.message, /nosuch/);
    });

    it("an RPC method name is not an expert (no 'health' through /experts/health)", async () => {
      const res = await request(app).post("/experts/health").send({ text: "x" }).expect(404);
      assert.equal(res.body.error.name, "UnknownExpert");
    });

    it("422 with the remote name and message when the expert fails", async () => {
      const res = await request(app).post("/experts/failing").send({ text: "anything" }).expect(422);
      assert.equal(res.body.error.name, "ExpertFailed");
      assert.equal(res.body.error.status, 422);
      assert.ok(res.body.error.message.length > 0);
      assert.doesNotMatch(res.body.error.message, /Traceback/);
    });

    it("400 MalformedJSON for a body that is not JSON", async () => {
      const res = await request(app).post("/experts/vader").set("Content-Type", "application/json").send('{"text": "unterminated').expect(400);
      assert.equal(res.body.error.name, "MalformedJSON");
      assert.equal(res.body.error.status, 400);
    });

    for (const [what, body] of [
      ["an array", "[1, 2]"],
      ["a string", '"just text"'],
      ["a number", "42"],
      ["null", "null"],
    ]) {
      it(`400 InvalidDocument for ${what}`, async () => {
        const res = await request(app).post("/experts/vader").set("Content-Type", "application/json").send(body).expect(400);
        assert.equal(res.body.error.name, "InvalidDocument");
      });
    }

    it("400 InvalidDocument (from the server) when the field is missing or not a string", async () => {
      const missing = await request(app).post("/experts/vader").send({ body: "no text field" }).expect(400);
      assert.equal(missing.body.error.name, "InvalidDocument");
      assert.match(missing.body.error.message, /text/);
      const notString = await request(app).post("/experts/vader").send({ text: 12 }).expect(400);
      assert.equal(notString.body.error.name, "InvalidDocument");
    });

    it("400 when there is no body at all", async () => {
      const res = await request(app).post("/experts/vader").expect(400);
      assert.equal(res.body.error.name, "InvalidDocument");
    });

    it("415 for an unsupported content type", async () => {
      const res = await request(app).post("/experts/vader").set("Content-Type", "text/plain").send("hello").expect(415);
      assert.equal(res.body.error.name, "UnsupportedMediaType");
      assert.equal(res.body.error.status, 415);
      const xml = await request(app).post("/experts/vader").set("Content-Type", "application/xml").send("<a/>").expect(415);
      assert.equal(xml.body.error.name, "UnsupportedMediaType");
    });

    it("413 PayloadTooLarge for a body over BODY_LIMIT (64kb here)", async () => {
      const res = await request(app).post("/experts/vader").send({ text: "a".repeat(70 * 1024) }).expect(413);
      assert.equal(res.body.error.name, "PayloadTooLarge");
      assert.equal(res.body.error.status, 413);
      const form = await request(app).post("/experts/vader").type("form").send(`text=${"a".repeat(70 * 1024)}`).expect(413);
      assert.equal(form.body.error.name, "PayloadTooLarge");
    });

    it("413 TextTooLong when the server's text limit is exceeded", async () => {
      const res = await request(app).post("/experts/vader").send({ text: "word ".repeat(MAX_TEXT_BYTES) }).expect(413);
      assert.equal(res.body.error.name, "TextTooLong");
      assert.equal(res.body.error.status, 413);
    });

    it("405 with Allow for a known path and another method", async () => {
      const res = await request(app).get("/experts/vader").expect(405);
      assert.equal(res.headers.allow, "POST");
      assert.equal(res.body.error.name, "MethodNotAllowed");
    });

    it("answers concurrent requests, each with its own opinion", async () => {
      const texts = Array.from({ length: 40 }, (_, i) => (i % 2 ? `I love it ${i}` : `I hate it, awful ${i}`));
      const results = await Promise.all(texts.map((text) => request(app).post("/experts/vader?merge=true").send({ text, i: texts.indexOf(text) })));
      results.forEach((res, i) => {
        assert.equal(res.status, 200);
        assert.equal(res.body.text, texts[i]);
        assert.equal(res.body.opinions.vader.label, i % 2 ? "positive" : "negative");
      });
    });
  });

  describe("POST /experts/:name/batch", () => {
    it("returns the opinions in order, equal to one-by-one answers", async () => {
      const docs = [{ text: POSITIVE }, { text: "This is terrible and I hate it." }, { text: "The table is brown." }];
      const res = await request(app).post("/experts/vader/batch").send(docs).expect(200);
      assert.equal(res.body.length, 3);
      for (let i = 0; i < docs.length; i++) {
        const one = await request(app).post("/experts/vader").send(docs[i]).expect(200);
        assert.deepEqual(res.body[i], one.body);
      }
      assert.equal(res.body[0].label, "positive");
      assert.equal(res.body[1].label, "negative");
    });

    it("works for the TensorFlow expert too", async () => {
      const docs = Array.from({ length: 10 }, (_, i) => ({ text: `${POSITIVE} ${i}` }));
      const res = await request(app).post("/experts/sentiment/batch").send(docs).expect(200);
      assert.equal(res.body.length, 10);
      for (const op of res.body) assert.equal(typeof op.valence, "number");
    });

    it("an empty array gives an empty array", async () => {
      const res = await request(app).post("/experts/vader/batch").send([]).expect(200);
      assert.deepEqual(res.body, []);
    });

    it("400 naming the index of a bad document", async () => {
      const res = await request(app).post("/experts/vader/batch").send([{ text: "ok" }, { text: "ok" }, { nope: 1 }]).expect(400);
      assert.equal(res.body.error.name, "InvalidDocument");
      assert.match(res.body.error.message, /docs\[2\]/);
    });

    it("400 for a body that is not an array, 404 for an unknown expert, 415 for a form", async () => {
      const notArray = await request(app).post("/experts/vader/batch").send({ text: "x" }).expect(400);
      assert.equal(notArray.body.error.name, "InvalidDocument");
      const unknown = await request(app).post("/experts/nosuch/batch").send([{ text: "x" }]).expect(404);
      assert.equal(unknown.body.error.name, "UnknownExpert");
      const form = await request(app).post("/experts/vader/batch").type("form").send("text=x").expect(415);
      assert.equal(form.body.error.name, "UnsupportedMediaType");
    });

    it("422 when the expert fails", async () => {
      const res = await request(app).post("/experts/failing/batch").send([{ text: "x" }]).expect(422);
      assert.equal(res.body.error.name, "ExpertFailed");
    });
  });

  describe("POST /opinions", () => {
    it("returns the document with every requested opinion", async () => {
      const doc = { id: "d1", text: POSITIVE };
      const res = await request(app).post("/opinions").send({ doc, experts: ["sentiment", "vader"] }).expect(200);
      assert.equal(res.body.id, "d1");
      assert.equal(res.body.text, POSITIVE);
      assert.deepEqual(Object.keys(res.body.opinions).sort(), ["sentiment", "vader"]);
      assert.equal(typeof res.body.opinions.sentiment.valence, "number");
      assert.equal(res.body.opinions.vader.label, "positive");
      assert.equal(res.body.errors, undefined);
    });

    it("a failing expert leaves errors.<name>; the others still answer", async () => {
      const res = await request(app).post("/opinions").send({ doc: { text: POSITIVE }, experts: ["vader", "failing"] }).expect(200);
      assert.equal(res.body.opinions.vader.label, "positive");
      assert.equal(res.body.errors.failing.name, "ExpertFailed");
      assert.equal(typeof res.body.errors.failing.message, "string");
    });

    it("asks every expert when 'experts' is omitted", async () => {
      const res = await request(app).post("/opinions").send({ doc: { text: POSITIVE } }).expect(200);
      const answered = [...Object.keys(res.body.opinions), ...Object.keys(res.body.errors || {})].sort();
      assert.deepEqual(answered, ["failing", "narrow", "poison", "sentiment", "slow", "vader"]);
    });

    it("makes ONE opinions() RPC call", async () => {
      const rpcCounts = async () => {
        const text = (await request(app).get("/metrics").expect(200)).text;
        const counts = {};
        for (const m of text.matchAll(/^expertd_bridge_rpc_duration_seconds_count\{method="(\w+)",outcome="(\w+)"\} (\d+)$/gm)) {
          counts[`${m[1]}/${m[2]}`] = Number(m[3]);
        }
        return counts;
      };
      const before = await rpcCounts();
      await request(app).post("/opinions").send({ doc: { text: "hello" }, experts: ["vader", "sentiment"] }).expect(200);
      const after = await rpcCounts();
      const delta = Object.entries(after)
        .map(([k, v]) => [k, v - (before[k] || 0)])
        .filter(([, d]) => d !== 0);
      assert.deepEqual(delta, [["opinions/ok", 1]]);
    });

    it("400 for a missing or non-object doc, 400 for bad 'experts', 404 for an unknown expert", async () => {
      const noDoc = await request(app).post("/opinions").send({ experts: ["vader"] }).expect(400);
      assert.equal(noDoc.body.error.name, "InvalidDocument");
      const arrDoc = await request(app).post("/opinions").send({ doc: [1] }).expect(400);
      assert.equal(arrDoc.body.error.name, "InvalidDocument");
      const badNames = await request(app).post("/opinions").send({ doc: { text: "x" }, experts: "vader" }).expect(400);
      assert.equal(badNames.body.error.name, "BadArguments");
      const unknown = await request(app).post("/opinions").send({ doc: { text: "x" }, experts: ["vader", "nosuch"] }).expect(404);
      assert.equal(unknown.body.error.name, "UnknownExpert");
      const malformed = await request(app).post("/opinions").set("Content-Type", "application/json").send("{").expect(400);
      assert.equal(malformed.body.error.name, "MalformedJSON");
    });
  });

  describe("timeouts", () => {
    it("504 RpcTimeout when the expert is slower than RPC_TIMEOUT, and the bridge goes on working", async () => {
      const quick = makeApp({ rpcOptions: { timeoutMs: 1000 } });
      const started = Date.now();
      const res = await request(quick).post("/experts/slow").send({ text: "zzz" }).expect(504);
      const took = Date.now() - started;
      assert.equal(res.body.error.name, "RpcTimeout");
      assert.equal(res.body.error.status, 504);
      assert.ok(took >= 900 && took < 2900, `took ${took} ms`);
      // The same client is not poisoned: the next calls answer.
      for (let i = 0; i < 3; i++) {
        const ok = await request(quick).post("/experts/vader").send({ text: POSITIVE }).expect(200);
        assert.equal(ok.body.label, "positive");
      }
      await request(quick).get("/healthz").expect(200);
    });

    it("the slow expert does answer within a longer timeout", async () => {
      const res = await request(app).post("/experts/slow").send({ text: "zzz" }).expect(200);
      assert.equal(typeof res.body, "object");
    });
  });

  describe("security", () => {
    it("sets security headers and no x-powered-by", async () => {
      const res = await request(app).get("/healthz").expect(200);
      assert.equal(res.headers["x-powered-by"], undefined);
      assert.equal(res.headers["x-content-type-options"], "nosniff");
      assert.equal(res.headers["x-frame-options"], "DENY");
      assert.match(res.headers["content-security-policy"], /default-src 'none'/);
      assert.equal(res.headers["referrer-policy"], "no-referrer");
      assert.equal(res.headers["cache-control"], "no-store");
    });

    describe("with EXPERTD_HTTP_TOKEN", () => {
      const TOKEN = "s3cret-token-for-tests";
      let secured;
      before(() => {
        secured = makeApp({ appOptions: { token: TOKEN } });
      });

      it("401 JSON without a token, with a wrong token, or a wrong scheme", async () => {
        for (const auth of [undefined, "Bearer wrong", `Basic ${TOKEN}`, `Bearer ${TOKEN}x`, "Bearer"]) {
          const req = request(secured).post("/experts/vader").send({ text: "x" });
          if (auth) req.set("Authorization", auth);
          const res = await req.expect(401).expect("Content-Type", /json/);
          assert.equal(res.body.error.name, "Unauthorized");
          assert.equal(res.body.error.status, 401);
          assert.match(res.headers["www-authenticate"], /^Bearer/);
        }
      });

      it("every route but /healthz needs the token (/metrics and unknown paths too)", async () => {
        await request(secured).get("/healthz").expect(200);
        for (const [method, path] of [
          ["get", "/experts"],
          ["get", "/metrics"],
          ["post", "/opinions"],
          ["post", "/experts/vader/batch"],
          ["get", "/no/such/route"],
        ]) {
          const res = await request(secured)[method](path).expect(401);
          assert.equal(res.body.error.name, "Unauthorized", `${method} ${path}`);
        }
      });

      it("answers with the right token", async () => {
        const auth = `Bearer ${TOKEN}`;
        await request(secured).get("/experts").set("Authorization", auth).expect(200);
        await request(secured).get("/metrics").set("Authorization", auth).expect(200);
        const res = await request(secured).post("/experts/vader").set("Authorization", auth).send({ text: POSITIVE }).expect(200);
        assert.equal(res.body.label, "positive");
        await request(secured).get("/no/such/route").set("Authorization", auth).expect(404);
      });

      it("does not read the body before checking the token", async () => {
        const res = await request(secured).post("/experts/vader").set("Content-Type", "application/json").send("{not json").expect(401);
        assert.equal(res.body.error.name, "Unauthorized");
      });
    });
  });

  describe("observability", () => {
    it("echoes a well-formed X-Request-Id, makes one up otherwise", async () => {
      const given = await request(app).get("/healthz").set("X-Request-Id", "abc-123.x:y_z").expect(200);
      assert.equal(given.headers["x-request-id"], "abc-123.x:y_z");
      const made = await request(app).get("/healthz").expect(200);
      assert.match(made.headers["x-request-id"], /^[0-9a-f]{32}$/);
      assert.equal(made.headers["traceresponse"].split("-")[1], made.headers["x-request-id"]);
      const bad = await request(app).get("/healthz").set("X-Request-Id", "has spaces\tand tabs").expect(200);
      assert.match(bad.headers["x-request-id"], /^[0-9a-f]{32}$/);
      const long = await request(app).get("/healthz").set("X-Request-Id", "x".repeat(300)).expect(200);
      assert.match(long.headers["x-request-id"], /^[0-9a-f]{32}$/);
    });

    it("writes one log line per request: method, route, status, latency, request id", async () => {
      const id = `log-test-${Date.now()}`;
      await request(app).post("/experts/vader").set("X-Request-Id", id).send({ text: POSITIVE }).expect(200);
      await request(app).post("/experts/nosuch").set("X-Request-Id", `${id}-404`).send({ text: "x" }).expect(404);
      const mine = logs.lines.filter((l) => l.reqId === id);
      assert.equal(mine.length, 1, JSON.stringify(mine));
      const [line] = mine;
      assert.equal(line.method, "POST");
      assert.equal(line.route, "/experts/:name");
      assert.equal(line.path, "/experts/vader");
      assert.equal(line.status, 200);
      assert.equal(line.expert, "vader");
      assert.equal(typeof line.ms, "number");
      assert.ok(line.ms > 0);
      const miss = logs.lines.filter((l) => l.reqId === `${id}-404`);
      assert.equal(miss.length, 1);
      assert.equal(miss[0].status, 404);
      assert.equal(miss[0].error, "UnknownExpert");
      assert.equal(miss[0].expert, "(other)", "made-up names do not become labels");
    });

    it("GET /metrics: Prometheus text with request counts, latency histograms and process metrics", async () => {
      await request(app).post("/experts/sentiment").send({ text: POSITIVE }).expect(200);
      await request(app).post("/experts/failing").send({ text: "x" }).expect(422);
      const res = await request(app).get("/metrics").expect(200);
      assert.match(res.headers["content-type"], /^text\/plain; version=0\.0\.4/);
      const text = res.text;
      assert.match(text, /# TYPE expertd_bridge_http_requests_total counter/);
      assert.match(text, /expertd_bridge_http_requests_total\{method="POST",route="\/experts\/:name",status="200",expert="sentiment"\} \d+/);
      assert.match(text, /expertd_bridge_http_requests_total\{method="POST",route="\/experts\/:name",status="422",expert="failing"\} \d+/);
      assert.match(text, /# TYPE expertd_bridge_http_request_duration_seconds histogram/);
      assert.match(text, /expertd_bridge_http_request_duration_seconds_bucket\{le="0\.1",method="POST",route="\/experts\/:name",status="200",expert="sentiment"\} \d+/);
      assert.match(text, /expertd_bridge_http_request_duration_seconds_count\{method="GET",route="\/healthz",status="200",expert=""\} \d+/);
      assert.match(text, /expertd_bridge_rpc_duration_seconds_count\{method="opinion",outcome="remote_error"\} \d+/);
      assert.match(text, /expertd_bridge_server_up 1/);
      assert.match(text, /process_cpu_user_seconds_total \d/);
      assert.match(text, /nodejs_eventloop_lag_seconds/);
      assert.doesNotMatch(text, /expert="nosuch"/);
    });

    it("unknown routes are JSON 404s, never HTML", async () => {
      const res = await request(app).get("/nope").expect(404).expect("Content-Type", /json/);
      assert.equal(res.body.error.name, "NotFound");
      const post = await request(app).post("/experts").send({}).expect(405);
      assert.equal(post.body.error.name, "MethodNotAllowed");
    });
  });
});
