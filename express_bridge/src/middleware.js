"use strict";
/**
 * Small Express middlewares: request id + access log, bearer-token auth,
 * route tagging, and the checks of hostile input (control characters in an
 * expert name, JSON nested too deep).
 */

const crypto = require("node:crypto");
const { HttpError, catalogueError } = require("./errors");
const { ERROR } = require("./spec");
const { parseTraceparent, formatTraceparent, childOf } = require("./trace_context");
const { records, startSpan } = require("./tracing");
const { parseRef, ExpertNameError, SEPARATOR } = require("./names");

/**
 * Characters no expert name can hold: C0 and C1 controls, DEL, and the
 * Unicode line and paragraph separators (a newline in a name could forge a
 * line in a plain-text log downstream).
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** An incoming X-Request-Id is kept only if it matches (no log injection). */
const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Give every request a trace context (`req.trace`: the caller's W3C
 * `traceparent` continued, else a new trace; trace_context.js) and an id (a
 * well-formed incoming X-Request-Id, else the trace id); answer both
 * (`traceresponse`, X-Request-Id), and write one log line when the response
 * ends: method, route, path, status, latency, request id, trace id, expert.
 * Also feeds the request metrics.
 * @param {object} options
 * @param {{info: Function, warn: Function}} options.logger pino-style logger
 * @param {(labels: object, seconds: number) => void} [options.observe] metrics hook
 * @param {(name: string, status: number) => string} [options.expertLabel] bounds the expert label
 * @returns {import("express").RequestHandler}
 */
function requestLog({ logger, observe = () => {}, expertLabel = (name) => name }) {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const parent = parseTraceparent(req.get("traceparent"));
    // Admitted at (admission.js): the request's span starts there, with the wait until now as a child.
    const admittedAt = res.admittedAt === undefined ? undefined : performance.timeOrigin + res.admittedAt;
    // A span (or, for a new trace the sampler dropped, its unrecorded context) unless tracing is off or the caller did not sample.
    const span = records(parent)
      ? startSpan(req.method, { parent, kind: "server", startTime: admittedAt, attributes: { "http.request.method": req.method } })
      : null;
    if (span) {
      if (admittedAt !== undefined && span.recording) startSpan("admission", { parent: span.context, startTime: admittedAt }).end();
      req.trace = span.context;
    } else {
      req.trace = childOf(parent);
    }
    const incoming = req.get("x-request-id");
    req.id = incoming && REQUEST_ID_RE.test(incoming) ? incoming : req.trace.traceId;
    res.setHeader("X-Request-Id", req.id);
    res.setHeader("traceresponse", formatTraceparent(req.trace));
    let logged = false;
    const done = () => {
      if (logged) return;
      logged = true;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = res.locals.route || "(unmatched)";
      const status = res.writableFinished ? res.statusCode : 499; // 499: client went away
      const expert = res.locals.expert ? expertLabel(res.locals.expert, status) : "";
      const line = {
        reqId: req.id,
        traceId: req.trace.traceId,
        method: req.method,
        route,
        path: req.path.length > 200 ? `${req.path.slice(0, 200)}...` : req.path,
        status,
        ms: Math.round(seconds * 1e6) / 1e3,
      };
      if (expert) line.expert = expert;
      if (res.locals.errorName) line.error = res.locals.errorName;
      (status >= 500 ? logger.warn : logger.info).call(logger, line, "request");
      if (span && span.recording) {
        span.span.updateName(`${req.method} ${route}`);
        span.set({ "http.route": route, "http.response.status_code": status, "expertd.expert": expert || undefined });
        if (res.locals.errorName) span.fail(res.locals.errorName, `HTTP ${status}`);
        span.end();
      }
      observe({ method: req.method, route, status, expert }, seconds);
    };
    res.on("finish", done);
    res.on("close", done);
    next();
  };
}

/**
 * Require `Authorization: Bearer <token>`; compares SHA-256 digests with
 * crypto.timingSafeEqual so the time taken does not depend on the token.
 * A null/empty token disables the check.
 * @param {string|null} token
 * @returns {import("express").RequestHandler}
 */
function bearerAuth(token) {
  if (!token) return (req, res, next) => next();
  const expected = crypto.createHash("sha256").update(token, "utf8").digest();
  return (req, res, next) => {
    const header = req.get("authorization") || "";
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    const given = crypto.createHash("sha256").update(m ? m[1] : "", "utf8").digest();
    if (m && crypto.timingSafeEqual(given, expected)) return next();
    next(new HttpError(401, "Unauthorized", header ? "invalid bearer token" : "this route needs 'Authorization: Bearer <token>'"));
  };
}

/**
 * Tag the request with its route pattern (and the expert named in the URL)
 * for logs and metrics.
 * @param {string} pattern e.g. "/experts/:name"
 * @returns {import("express").RequestHandler}
 */
function tagRoute(pattern) {
  return (req, res, next) => {
    res.locals.route = pattern;
    if (req.params && typeof req.params.name === "string") res.locals.expert = escapeControls(req.params.name);
    next();
  };
}

/**
 * `text` with every control character (CONTROL_RE) written as a `\\uXXXX`
 * escape, so that it stays on one line in any log, JSON or not.
 * @param {string} text
 * @returns {string}
 */
function escapeControls(text) {
  return text.replace(new RegExp(CONTROL_RE.source, "g"), (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Refuse an expert name (the `:name` URL parameter) that holds control
 * characters, or a `NAME@VERSION` that does not parse (src/names.js): 404
 * UnknownExpert, with the name JSON-escaped in the message, and nothing sent
 * to the server.
 * @returns {import("express").RequestHandler}
 */
function checkExpertName() {
  return (req, res, next) => {
    const name = req.params && req.params.name;
    if (typeof name === "string" && CONTROL_RE.test(name)) {
      return next(catalogueError(ERROR.UnknownExpert, `unknown expert ${JSON.stringify(name)}: expert names hold no control characters`));
    }
    if (typeof name === "string" && name.includes(SEPARATOR)) {
      try {
        parseRef(name); // NAME@VERSION: a bad one is refused here, with what is wrong
      } catch (err) {
        if (!(err instanceof ExpertNameError)) throw err;
        return next(catalogueError(ERROR.UnknownExpert, err.message));
      }
    }
    next();
  };
}

/**
 * How deeply `value` nests (a scalar is 0, `[]` and `{}` are 1), counted
 * without recursion and stopping as soon as `limit` is passed.
 * @param {unknown} value @param {number} limit
 * @returns {number} the depth, or `limit + 1` when it is deeper than `limit`
 */
function jsonDepth(value, limit) {
  let deepest = 0;
  const stack = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop();
    if (v === null || typeof v !== "object") continue;
    const d = depth + 1;
    if (d > limit) return limit + 1;
    if (d > deepest) deepest = d;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === "object") stack.push([child, d]);
    }
  }
  return deepest;
}

/**
 * 400 InvalidDocument for a parsed body nested deeper than `maxDepth` levels
 * (the RPC encoder, and the server, recurse per level).
 * @param {number} maxDepth
 * @returns {import("express").RequestHandler}
 */
function limitJsonDepth(maxDepth) {
  return (req, res, next) => {
    if (req.body !== null && typeof req.body === "object" && jsonDepth(req.body, maxDepth) > maxDepth) {
      return next(catalogueError(ERROR.InvalidDocument, `the request body nests deeper than ${maxDepth} levels of arrays and objects`));
    }
    next();
  };
}

module.exports = { requestLog, bearerAuth, tagRoute, checkExpertName, escapeControls, limitJsonDepth, jsonDepth, REQUEST_ID_RE, CONTROL_RE };
