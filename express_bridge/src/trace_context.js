"use strict";
/**
 * W3C trace context for the bridge: one id per call, end to end.
 *
 * Every HTTP request gets a trace context: the caller's `traceparent` header
 * continued (same trace id, the caller's sampling decision), or a new trace.
 * The response carries the trace id (`traceresponse`, and `X-Request-Id`
 * unless the caller gave one), the access log line carries it (`traceId`), and
 * every RPC made for the request carries it to the server in the
 * `expertd_traceparent` zerorpc header key (`TRACE_HEADER` of
 * expertd/protocol.json), so the server's log line for the call carries the
 * same id. A coalesced call also lists the traceparent of each request it
 * serves (`TRACE_LINKS_HEADER`). With tracing off this module is all there is:
 * no OpenTelemetry package is loaded, a few string operations per request.
 */

const crypto = require("node:crypto");
const { TRACE_HEADER, TRACE_LINKS_HEADER } = require("./spec");

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/**
 * @typedef {{traceId: string, spanId: string, flags: number}} TraceContext
 */

/**
 * The trace context in a `traceparent` header value, or null when it is not a valid one.
 * @param {unknown} value
 * @returns {TraceContext|null}
 */
function parseTraceparent(value) {
  if (typeof value !== "string" || value.length > 512) return null;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (!m) return null;
  const [, version, traceId, spanId, flags, rest] = m;
  if (version === "ff" || (version === "00" && rest !== undefined)) return null;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return null;
  return { traceId, spanId, flags: parseInt(flags, 16) };
}

/** @param {TraceContext} ctx @returns {string} the `traceparent` value (version 00) */
function formatTraceparent(ctx) {
  return `00-${ctx.traceId}-${ctx.spanId}-${(ctx.flags & 0xff).toString(16).padStart(2, "0")}`;
}

/** @returns {string} a random trace id (32 hex digits) */
function newTraceId() {
  return crypto.randomBytes(16).toString("hex");
}

/** @returns {string} a random span id (16 hex digits) */
function newSpanId() {
  return crypto.randomBytes(8).toString("hex");
}

/**
 * A new span's context: in `parent`'s trace with its sampling, or in a new trace.
 * @param {TraceContext|null} parent
 * @param {boolean} [sampledIfNew=false] the sampled flag of a new trace (true only when spans are recorded)
 * @returns {TraceContext}
 */
function childOf(parent, sampledIfNew = false) {
  if (parent) return { traceId: parent.traceId, spanId: newSpanId(), flags: parent.flags };
  return { traceId: newTraceId(), spanId: newSpanId(), flags: sampledIfNew ? 1 : 0 };
}

/**
 * The zerorpc header keys that carry a call's trace context to the server.
 * @param {TraceContext|null|undefined} ctx the context the server's work hangs under
 * @param {TraceContext[]} [links] the requests a coalesced call serves
 * @returns {Record<string, string|string[]>}
 */
function traceHeader(ctx, links) {
  const header = {};
  if (ctx) header[TRACE_HEADER] = formatTraceparent(ctx);
  if (links && links.length > 0) header[TRACE_LINKS_HEADER] = links.map(formatTraceparent);
  return header;
}

module.exports = { parseTraceparent, formatTraceparent, newTraceId, newSpanId, childOf, traceHeader };
