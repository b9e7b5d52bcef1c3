"use strict";
/**
 * The call view's data: a bounded in-memory ring of recent traces (the
 * bridge's own spans, fed by tracing.js when tracing is on) and two routes:
 *
 *   GET /traces?expert=NAME&outcome=ok|error&sort=recent|slowest&limit=N
 *     the recent HTTP calls (one per trace): expert, status, error, duration;
 *   GET /trace?id=TRACEID
 *     one call's spans, the bridge's and the server's (the server's own ring,
 *     asked through its `traces(trace_ids)` RPC method, of every worker the bridge's
 *     connections reach), for its waterfall.
 *
 * No backend is needed: the page draws the waterfall from these. Bounded:
 * at most MAX_TRACES traces of MAX_SPANS spans each; the oldest go first.
 */

const { onSpanEnd, tracer } = require("./tracing");
const { METHOD } = require("./spec");
const { HttpError } = require("./errors");

const MAX_TRACES = 256;
const MAX_SPANS = 200;
const TRACE_ID_RE = /^[0-9a-f]{32}$/;
const SHOWN = new Set(["expertd.expert", "expertd.batch_size", "expertd.links", "expertd.linked", "error.type",
  "rpc.method", "http.route", "http.response.status_code", "expertd.queued"]);

const hrMs = (t) => t[0] * 1e3 + t[1] / 1e6;

/** Spans of recent traces, by trace id, in the order they began. */
class TraceRing {
  constructor(maxTraces = MAX_TRACES, maxSpans = MAX_SPANS) {
    this.maxTraces = maxTraces;
    this.maxSpans = maxSpans;
    /** @type {Map<string, object[]>} */
    this.traces = new Map();
  }

  /** Keep an ended span (an OpenTelemetry ReadableSpan). */
  add(span) {
    const ctx = span.spanContext();
    if (span.attributes["http.route"] === "/traces" || span.attributes["http.route"] === "/trace") return;
    let spans = this.traces.get(ctx.traceId);
    if (!spans) {
      spans = [];
      this.traces.set(ctx.traceId, spans);
      if (this.traces.size > this.maxTraces) this.traces.delete(this.traces.keys().next().value);
    }
    if (spans.length >= this.maxSpans) return;
    const attributes = {};
    for (const [k, v] of Object.entries(span.attributes)) if (SHOWN.has(k)) attributes[k] = v;
    const parent = span.parentSpanContext || null;
    spans.push({
      name: span.name,
      span_id: ctx.spanId,
      parent_id: parent ? parent.spanId : null,
      service: span.attributes["expertd.service"] || "expertd-bridge",
      start_ms: hrMs(span.startTime),
      duration_ms: hrMs(span.duration),
      error: span.attributes["error.type"] || null,
      attributes,
    });
  }

  /**
   * One summary per trace that holds an HTTP call (its request span).
   * @returns {{trace_id: string, name: string, expert: string|null, status: number, error: string|null,
   *   start_ms: number, duration_ms: number}[]}
   */
  calls() {
    const out = [];
    for (const [traceId, spans] of this.traces) {
      const root = spans.find((s) => s.attributes["http.route"] !== undefined);
      if (!root) continue;
      out.push({
        trace_id: traceId,
        name: root.name,
        expert: root.attributes["expertd.expert"] || null,
        status: root.attributes["http.response.status_code"] || null,
        error: root.error,
        start_ms: root.start_ms,
        duration_ms: root.duration_ms,
      });
    }
    return out;
  }
}

/**
 * Mount GET /traces and GET /trace?id=TRACEID.
 * @param {Function} route app.js's `route(method, path, options, ...handlers)`
 * @param {{rpc: object, rpcCall: Function}} deps
 * @returns {TraceRing} the ring (fed only when tracing is on)
 */
function mountCallsView(route, { rpc, rpcCall }) {
  const ring = new TraceRing();
  if (tracer()) onSpanEnd((span) => ring.add(span));

  route("get", "/traces", {}, (req, res) => {
    const { expert, outcome, sort } = req.query;
    const limit = Math.min(200, Math.max(1, Number(req.query.limit) || 50));
    let calls = ring.calls();
    if (typeof expert === "string" && expert) calls = calls.filter((c) => c.expert === expert);
    if (outcome === "ok") calls = calls.filter((c) => !c.error && c.status < 400);
    if (outcome === "error") calls = calls.filter((c) => c.error || c.status >= 400);
    calls.sort(sort === "slowest" ? (a, b) => b.duration_ms - a.duration_ms : (a, b) => b.start_ms - a.start_ms);
    res.json({ tracing: Boolean(tracer()), calls: calls.slice(0, limit) });
  });

  route("get", "/trace", {}, async (req, res) => {
    const traceId = req.query.id;
    if (typeof traceId !== "string" || !TRACE_ID_RE.test(traceId)) throw new HttpError(400, "BadRequest", "a trace id is 32 lowercase hex digits");
    const own = ring.traces.get(traceId) || [];
    // Each server process keeps its own ring (`--workers N`: one per worker), and a call's server
    // spans are in the worker its connection reached: ask every worker this bridge's connections reach.
    const server = [];
    const seen = new Set();
    try {
      const answers = await rpcCall(METHOD.traces, () => rpc.callEachPeer(METHOD.traces, [[traceId]], { timeoutMs: 5000 }));
      for (const answer of answers) {
        for (const span of (answer && answer[traceId]) || []) {
          if (seen.has(span.span_id)) continue;
          seen.add(span.span_id);
          server.push(span);
        }
      }
    } catch {
      // the server's spans are a bonus: the bridge's are shown anyway
    }
    if (own.length === 0 && server.length === 0) throw new HttpError(404, "NotFound", `no recent trace ${traceId} here (the ring keeps the last ${MAX_TRACES})`);
    res.json({ trace_id: traceId, spans: [...own, ...server].sort((a, b) => a.start_ms - b.start_ms) });
  });
  return ring;
}

module.exports = { mountCallsView, TraceRing, MAX_TRACES };
