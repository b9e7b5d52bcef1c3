"use strict";
/**
 * OpenTelemetry spans for the bridge, on only when the standard variables say so.
 *
 * Off by default, and then free: `tracer()` returns null and no OpenTelemetry
 * package is loaded (trace_context.js still gives every request its trace id).
 * On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`: OTLP over HTTP, protobuf
 * unless `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`, to
 * `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, read by
 * the exporter itself; `console`), unless `OTEL_SDK_DISABLED=true`. The sampler
 * follows `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` as the specification
 * names them (default `parentbased_always_on`: a request's `traceparent` decides,
 * else every trace is kept); the service is `OTEL_SERVICE_NAME`, else
 * `expertd-bridge`. The SDK packages are the bridge's dependencies
 * (@opentelemetry/sdk-trace, exporter-trace-otlp-proto and -http, resources, api).
 *
 * Contexts travel as trace_context.js's `{traceId, spanId, flags}` (what the
 * wire and the response headers carry) and every span is given its parent
 * explicitly: no async context manager, so tracing costs nothing where it is
 * not asked for.
 *
 * The sampling decision is made once, at the root, and followed: under a
 * parent-based sampler (the default; `parentbased_*`) a span whose parent says
 * "not sampled" never reaches the SDK (`startSpan` returns null at once, and
 * callers ask `records(parent)` before building attributes), so such a request
 * costs what tracing off costs, and keeps its trace id. A root the sampler
 * drops gives a handle with `recording: false` whose `context` (flags 00) its
 * children follow the same way.
 */

const { formatTraceparent, newTraceId, newSpanId } = require("./trace_context");

let state = null; // {tracer, provider, api} once configured, or {tracer: null}

/** Functions called with each span that ends (the in-memory ring of recent calls, recent.js). */
const listeners = [];

/**
 * The exporters `OTEL_TRACES_EXPORTER` names (none unless set), [] when the SDK is disabled.
 * @param {NodeJS.ProcessEnv} env
 * @returns {string[]}
 */
function wantedExporters(env) {
  if ((env.OTEL_SDK_DISABLED || "").trim().toLowerCase() === "true") return [];
  return (env.OTEL_TRACES_EXPORTER || "").split(",").map((s) => s.trim().toLowerCase()).filter((s) => s && s !== "none");
}

/**
 * The sampler the specification's `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name.
 * @param {object} sdk @opentelemetry/sdk-trace
 * @param {NodeJS.ProcessEnv} env
 */
function samplerFromEnv(sdk, env) {
  const name = (env.OTEL_TRACES_SAMPLER || "parentbased_always_on").trim().toLowerCase();
  const arg = Number(env.OTEL_TRACES_SAMPLER_ARG);
  const ratio = Number.isFinite(arg) && arg >= 0 && arg <= 1 ? arg : 1;
  const roots = {
    always_on: () => new sdk.AlwaysOnSampler(),
    always_off: () => new sdk.AlwaysOffSampler(),
    traceidratio: () => new sdk.TraceIdRatioBasedSampler(ratio),
  };
  if (roots[name]) return roots[name]();
  const parentBased = /^parentbased_(always_on|always_off|traceidratio)$/.exec(name);
  if (parentBased) return new sdk.ParentBasedSampler({ root: roots[parentBased[1]]() });
  return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() });
}

/**
 * Configure the SDK from `env` (once per process).
 * @param {NodeJS.ProcessEnv} [env=process.env]
 * @returns {object|null} the tracing state, null when tracing is off
 */
function tracer(env = process.env) {
  if (state) return state.tracer ? state : null;
  const exporters = wantedExporters(env);
  if (exporters.length === 0) {
    state = { tracer: null };
    return null;
  }
  const api = require("@opentelemetry/api");
  const sdk = require("@opentelemetry/sdk-trace");
  const { resourceFromAttributes } = require("@opentelemetry/resources");
  const spanProcessors = [];
  for (const name of exporters) {
    if (name === "otlp") {
      // The specification's default protocol is http/protobuf (the one every backend takes); http/json on request.
      const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL || "http/protobuf").trim();
      const { OTLPTraceExporter } = require(protocol === "http/json" ? "@opentelemetry/exporter-trace-otlp-http" : "@opentelemetry/exporter-trace-otlp-proto");
      spanProcessors.push(new sdk.BatchSpanProcessor({ exporter: new OTLPTraceExporter(), scheduledDelayMillis: Number(env.OTEL_BSP_SCHEDULE_DELAY) || 5000 }));
    } else if (name === "console") {
      spanProcessors.push(new sdk.SimpleSpanProcessor({ exporter: new sdk.ConsoleSpanExporter() }));
    } else {
      process.emitWarning(`OTEL_TRACES_EXPORTER names ${JSON.stringify(name)}, which the bridge does not know (otlp, console, none)`);
    }
  }
  spanProcessors.push({
    onStart() {},
    onEnd(span) {
      for (const listener of listeners) listener(span);
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  });
  const sampler = samplerFromEnv(sdk, env);
  const ids = new PresetIdGenerator(new sdk.RandomIdGenerator());
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ "service.name": env.OTEL_SERVICE_NAME || "expertd-bridge" }),
    sampler,
    spanProcessors,
    idGenerator: ids,
  });
  state = {
    tracer: provider.getTracer("expertd-bridge"), provider, api, service: env.OTEL_SERVICE_NAME || "expertd-bridge",
    parentBased: parentBasedSampler(env), sampler, ids,
  };
  return state;
}

/**
 * The SDK's ids, except that a new trace takes the trace id the root's sampling decision was made on
 * (`startSpan` asks the sampler before it builds anything, then lets the SDK start the span it kept).
 */
class PresetIdGenerator {
  constructor(random) {
    this.random = random;
    this.next = null;
  }

  generateTraceId() {
    const id = this.next;
    this.next = null;
    return id || this.random.generateTraceId();
  }

  generateSpanId() {
    return this.random.generateSpanId();
  }
}

/**
 * Whether `OTEL_TRACES_SAMPLER` follows the parent's decision (the default does).
 * @param {NodeJS.ProcessEnv} env
 */
function parentBasedSampler(env) {
  const name = (env.OTEL_TRACES_SAMPLER || "").trim().toLowerCase();
  return name === "" || name.startsWith("parentbased_");
}

/**
 * Whether a span under `parent` (null: a new trace) may be recorded: tracing is on, and the
 * parent is sampled unless the sampler ignores the parent's decision. Cheap: ask it before
 * building a span's attributes.
 * @param {{flags: number}|null|undefined} parent
 * @returns {boolean}
 */
function records(parent) {
  const t = tracer();
  if (!t) return false;
  return !parent || (parent.flags & 1) === 1 || !t.parentBased;
}

const KINDS = { internal: 0, server: 1, client: 2, producer: 3, consumer: 4 };

/**
 * A span handle: `context` (trace_context.js form, to send on), attributes, errors, end.
 */
class BridgeSpan {
  /** @param {object} span an OpenTelemetry span that records */
  constructor(span) {
    this.recording = true;
    this.span = span;
    const c = span.spanContext();
    this.context = { traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags };
  }

  /** @param {Record<string, any>} attributes (undefined values skipped) */
  set(attributes) {
    for (const [k, v] of Object.entries(attributes)) if (v !== undefined && v !== null) this.span.setAttribute(k, v);
    return this;
  }

  /** Record an error by its catalogue name (status ERROR, `error.type`, an exception event). */
  fail(name, message = "") {
    this.span.setAttribute("error.type", name);
    this.span.addEvent("exception", { "exception.type": name, "exception.message": String(message).slice(0, 300) });
    this.span.setStatus({ code: 2, message: name });
    return this;
  }

  /** @param {{traceId: string, spanId: string, flags: number}} context link to another span */
  link(context) {
    if (context && this.span.addLink) this.span.addLink({ context: { traceId: context.traceId, spanId: context.spanId, traceFlags: context.flags & 1, isRemote: true } });
    if (context) this.span.setAttribute("expertd.linked", `${context.traceId}-${context.spanId}`);
    return this;
  }

  /** @param {number} [endTime] epoch milliseconds */
  end(endTime) {
    this.span.end(endTime);
  }

  /** The traceparent of this span. */
  get traceparent() {
    return formatTraceparent(this.context);
  }
}

/** A root span the sampler dropped: records nothing; its context (flags 00) is what the request's work follows. */
class UnrecordedSpan {
  constructor(context) {
    this.recording = false;
    this.context = context;
  }

  set() {
    return this;
  }

  fail() {
    return this;
  }

  link() {
    return this;
  }

  end() {}

  /** The traceparent of this span. */
  get traceparent() {
    return formatTraceparent(this.context);
  }
}

/**
 * Start a span under `parent` (a trace_context.js context; none: a new trace), or null when tracing is off.
 * @param {string} name
 * @param {{parent?: object|null, kind?: keyof KINDS, attributes?: object, links?: object[], startTime?: number}} [options]
 *   `startTime`: epoch milliseconds (e.g. when a wait began)
 * @returns {BridgeSpan|UnrecordedSpan|null} null when tracing is off or `parent` is not sampled
 *   (parent-based sampling); an UnrecordedSpan for a new trace the sampler dropped
 */
function startSpan(name, { parent = null, kind = "internal", attributes = {}, links = [], startTime } = {}) {
  const t = tracer();
  if (!t) return null;
  if (parent && (parent.flags & 1) === 0 && t.parentBased) return null; // the root's decision: not sampled
  const { api } = t;
  if (!parent) {
    // A root: the sampler decides first, on the trace id the trace will have; a dropped trace costs no more.
    const traceId = newTraceId();
    const { decision } = t.sampler.shouldSample(api.ROOT_CONTEXT, traceId, name, KINDS[kind] ?? 0, {}, []);
    if (decision === 0) return new UnrecordedSpan({ traceId, spanId: newSpanId(), flags: 0 }); // NOT_RECORD
    t.ids.next = traceId;
  }
  const ctx = parent
    ? api.trace.setSpanContext(api.ROOT_CONTEXT, { traceId: parent.traceId, spanId: parent.spanId, traceFlags: parent.flags & 1, isRemote: true })
    : api.ROOT_CONTEXT;
  const clean = {};
  for (const [k, v] of Object.entries(attributes)) if (v !== undefined && v !== null) clean[k] = v;
  // Also as attributes: some backends (Phoenix) keep neither the resource nor the links.
  clean["expertd.service"] = t.service;
  // Under parent-based sampling an unsampled request is recorded nowhere: no link to it.
  const linked = links.filter((l) => l && ((l.flags & 1) === 1 || !t.parentBased));
  if (linked.length > 0) clean["expertd.links"] = linked.slice(0, 128).map((l) => `${l.traceId}-${l.spanId}`);
  const span = t.tracer.startSpan(name, {
    kind: KINDS[kind] ?? 0,
    attributes: clean,
    links: linked.map((l) => ({ context: { traceId: l.traceId, spanId: l.spanId, traceFlags: l.flags & 1, isRemote: true } })),
    startTime,
  }, ctx);
  t.ids.next = null;
  if (!span.isRecording()) {
    const c = span.spanContext(); // a new trace the sampler dropped
    return new UnrecordedSpan({ traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags });
  }
  return new BridgeSpan(span);
}

/** Export what is recorded (before exit). @returns {Promise<void>} */
async function flush() {
  if (state && state.provider) await state.provider.forceFlush();
}

/** Stop the SDK, exporting what is left. @returns {Promise<void>} */
async function shutdown() {
  if (state && state.provider) await state.provider.shutdown();
}

/** @param {(span: object) => void} listener called with each ended span (a ReadableSpan) */
function onSpanEnd(listener) {
  listeners.push(listener);
}

module.exports = { tracer, records, startSpan, flush, shutdown, onSpanEnd, samplerFromEnv, wantedExporters };
