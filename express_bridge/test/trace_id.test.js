"use strict";
/**
 * One id per call (trace_context.js): the bridge continues a W3C `traceparent`
 * or starts a trace, answers the trace id (`traceresponse`, X-Request-Id),
 * logs it, and sends it over ZeroRPC (`expertd_traceparent`), where a real
 * expertd's log line for the call carries it; a coalesced call lists the
 * trace id of every request it served.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { parseTraceparent, formatTraceparent, childOf } = require("../src/trace_context");
const { execFileSync, execFile } = require("node:child_process");
const { promisify } = require("node:util");
const { startExpertd, startBridge, REPO_ROOT, sleep } = require("./helpers");
const { samplerFromEnv, wantedExporters } = require("../src/tracing");

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = `00-${TRACE}-00f067aa0ba902b7-01`;

describe("trace context parsing (W3C)", () => {
  it("reads a valid traceparent and refuses the invalid ones", () => {
    assert.deepEqual(parseTraceparent(PARENT), { traceId: TRACE, spanId: "00f067aa0ba902b7", flags: 1 });
    for (const bad of [undefined, "", "garbage", `ff-${TRACE}-00f067aa0ba902b7-01`, `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`, `00-${TRACE.toUpperCase()}-00f067aa0ba902b7-01`, `00-${TRACE}-00f067aa0ba902b7-01-extra`]) {
      assert.equal(parseTraceparent(bad), null, String(bad));
    }
    // A later version may carry more fields: the first four are read.
    assert.equal(parseTraceparent(`01-${TRACE}-00f067aa0ba902b7-00-more`).traceId, TRACE);
  });

  it("continues the parent's trace and sampling, or starts an unsampled one", () => {
    const child = childOf(parseTraceparent(PARENT));
    assert.equal(child.traceId, TRACE);
    assert.notEqual(child.spanId, "00f067aa0ba902b7");
    assert.equal(formatTraceparent(child), `00-${TRACE}-${child.spanId}-01`);
    const fresh = childOf(null);
    assert.match(fresh.traceId, /^[0-9a-f]{32}$/);
    assert.equal(fresh.flags, 0);
  });
});

describe("tracing switch (tracing.js): the standard OTEL_* variables", () => {
  it("is off unless OTEL_TRACES_EXPORTER names an exporter, and then loads no OpenTelemetry SDK package", () => {
    assert.deepEqual(wantedExporters({}), []);
    assert.deepEqual(wantedExporters({ OTEL_TRACES_EXPORTER: "none" }), []);
    assert.deepEqual(wantedExporters({ OTEL_TRACES_EXPORTER: "otlp", OTEL_SDK_DISABLED: "true" }), []);
    assert.deepEqual(wantedExporters({ OTEL_TRACES_EXPORTER: "otlp, console" }), ["otlp", "console"]);
    const script = `
      const request = require("supertest");
      const { createApp } = require("./src/app");
      const rpc = { knownExperts: new Set(), health: async () => ({ status: "ok" }) };
      request(createApp({ rpc })).get("/healthz").then((res) => {
        // prom-client loads @opentelemetry/api itself (the no-op API); the SDK is what costs.
        const loaded = Object.keys(require.cache).some((k) => /@opentelemetry[\\/](sdk-trace|exporter|resources|core)/.test(k));
        console.log(JSON.stringify({ loaded, traceresponse: res.headers.traceresponse }));
      });`;
    const env = { PATH: process.env.PATH };
    const out = JSON.parse(execFileSync(process.execPath, ["-e", script], { cwd: path.join(__dirname, ".."), env }).toString());
    assert.equal(out.loaded, false);
    assert.match(out.traceresponse, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  });

  it("builds the sampler OTEL_TRACES_SAMPLER names (parent-based by default)", () => {
    const sdk = require("@opentelemetry/sdk-trace");
    assert.match(samplerFromEnv(sdk, {}).toString(), /ParentBased\{root=AlwaysOnSampler/);
    assert.match(samplerFromEnv(sdk, { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.01" }).toString(),
      /ParentBased\{root=TraceIdRatioBased\{0.01\}/);
    assert.match(samplerFromEnv(sdk, { OTEL_TRACES_SAMPLER: "always_off" }).toString(), /AlwaysOffSampler/);
  });
});

describe("one trace id from the HTTP request to the server's log line", { timeout: 180000 }, () => {
  let expertd;
  let bridge;
  let base;

  before(async () => {
    expertd = await startExpertd({ config: path.join(REPO_ROOT, "tests", "vader_experts.yaml") });
    bridge = startBridge({ HOST: "127.0.0.1", PORT: "0", EXPERTD_ENDPOINT: expertd.endpoint });
    base = await bridge.ready;
  });

  after(async () => {
    if (bridge && bridge.proc.exitCode === null) bridge.proc.kill("SIGKILL");
    if (expertd) await expertd.stop();
  });

  const post = (url, body, headers = {}) =>
    fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

  it("continues the caller's traceparent: response headers, bridge log, server log", async () => {
    const res = await post(`${base}/experts/vader`, { text: "What a lovely day" }, { traceparent: PARENT });
    assert.equal(res.status, 200);
    const answered = parseTraceparent(res.headers.get("traceresponse"));
    assert.equal(answered.traceId, TRACE);
    assert.equal(answered.flags, 1);
    assert.equal(res.headers.get("x-request-id"), TRACE);
    await sleep(100);
    const line = bridge.lines.find((l) => l.msg === "request" && l.traceId === TRACE);
    assert.ok(line, "the bridge's log line carries the trace id");
    assert.match(expertd.output(), new RegExp(`call opinion expert=vader .* trace=${TRACE}`));
  });

  it("starts a trace when the caller sent none (or a malformed one)", async () => {
    const res = await post(`${base}/experts/vader`, { text: "fine" }, { traceparent: "00-nonsense" });
    assert.equal(res.status, 200);
    const answered = parseTraceparent(res.headers.get("traceresponse"));
    assert.ok(answered);
    assert.equal(res.headers.get("x-request-id"), answered.traceId);
    await sleep(100);
    assert.match(expertd.output(), new RegExp(`trace=${answered.traceId}`));
  });

  it("with tracing on, a request its caller did not sample never reaches the SDK, and keeps its trace id", async () => {
    // The decision is made once, at the root: a traceparent with flags 00 under a parent-based sampler costs
    // what tracing off costs (no span started); a request without one is a root, decided at once (here: dropped).
    const unsampled = "5bf92f3577b34da6a3ce929d0e0e4737";
    const script = `
      const request = require("supertest");
      const tracing = require("./src/tracing");
      const { createApp } = require("./src/app");
      const { ExpertdClient } = require("./src/rpc");
      const t = tracing.tracer();
      const started = [];
      const startSpan = t.tracer.startSpan.bind(t.tracer);
      t.tracer.startSpan = (name, ...rest) => { started.push(name); return startSpan(name, ...rest); };
      const rpc = new ExpertdClient({ endpoint: ${JSON.stringify(expertd.endpoint)}, timeoutMs: 20000 });
      const app = createApp({ rpc });
      (async () => {
        const out = {};
        for (const [label, traceparent] of [["unsampled", "00-${unsampled}-00f067aa0ba902b7-00"], ["root", null], ["sampled", ${JSON.stringify(PARENT)}]]) {
          started.length = 0;
          const req = request(app).post("/experts/vader").send({ text: "What a lovely day" });
          const res = await (traceparent ? req.set("traceparent", traceparent) : req);
          out[label] = { status: res.status, traceresponse: res.headers.traceresponse, requestId: res.headers["x-request-id"], started: [...started] };
        }
        console.log("RESULT " + JSON.stringify(out));
        process.exit(0);
      })();`;
    const env = { PATH: process.env.PATH, OTEL_TRACES_EXPORTER: "console", OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" };
    const { stdout } = await promisify(execFile)(process.execPath, ["-e", script], { cwd: path.join(__dirname, ".."), env, maxBuffer: 1 << 24 });
    const out = JSON.parse(stdout.split("\n").find((l) => l.startsWith("RESULT ")).slice(7));
    assert.equal(out.unsampled.status, 200);
    assert.deepEqual(out.unsampled.started, [], "an unsampled request reached the OpenTelemetry SDK");
    assert.equal(parseTraceparent(out.unsampled.traceresponse).traceId, unsampled);
    assert.equal(parseTraceparent(out.unsampled.traceresponse).flags, 0);
    assert.equal(out.unsampled.requestId, unsampled);
    await sleep(100);
    assert.match(expertd.output(), new RegExp(`call opinion expert=vader .* trace=${unsampled}`));
    // A root: the sampler decides before anything is built; a dropped trace never reaches the SDK either.
    assert.equal(out.root.status, 200);
    assert.deepEqual(out.root.started, []);
    assert.equal(parseTraceparent(out.root.traceresponse).flags, 0);
    assert.equal(out.root.requestId, parseTraceparent(out.root.traceresponse).traceId);
    // The caller sampled: every span of the request is started.
    assert.equal(out.sampled.status, 200);
    assert.deepEqual(out.sampled.started, ["POST", "coalescer wait", "rpc opinion"]);
    assert.equal(parseTraceparent(out.sampled.traceresponse).traceId, TRACE);
  });

  it("a coalesced call carries the trace id of every request it serves", async () => {
    const ids = Array.from({ length: 24 }, (_, i) => `${TRACE.slice(0, 30)}${(i + 16).toString(16).padStart(2, "0")}`);
    const answers = await Promise.all(ids.map((id) => post(`${base}/experts/vader`, { text: "so good" }, { traceparent: `00-${id}-00f067aa0ba902b7-01` })));
    for (const [i, res] of answers.entries()) {
      assert.equal(res.status, 200);
      assert.equal(parseTraceparent(res.headers.get("traceresponse")).traceId, ids[i]);
    }
    await sleep(100);
    const log = expertd.output();
    const batched = log.split("\n").filter((l) => l.includes("call opinions_batch") && l.includes(" links="));
    assert.ok(batched.length > 0, "some requests were coalesced");
    for (const id of ids) assert.ok(log.includes(id), `the server logged ${id}`);
  });
});
