"use strict";
/**
 * The Express application: HTTP/JSON in front of expertd's RPC methods.
 * `createApp` only builds the app; it never listens (see server.js).
 */

const express = require("express");
const helmet = require("helmet");
const pino = require("pino");
const { HttpError, RemoteError, errorHandler, notFound, toHttpError, errorBody, jsonType, catalogueError } = require("./errors");
const { ERROR, METHOD } = require("./spec");
const { requestLog, bearerAuth, tagRoute, checkExpertName, limitJsonDepth } = require("./middleware");
const { createMetrics } = require("./metrics");
const { parseBytes } = require("./config");
const { openApiHandler } = require("./openapi");
const { sharedCall } = require("./shared_call");
const { streamHandler } = require("./ndjson");
const { corsPolicy } = require("./cors");
const { pageRouter } = require("./page");
const { mountLearn } = require("./learn");
const { mountCallsView } = require("./calls_view");
const { bodyParsers, SEND_JSON_HINT } = require("./body");

/**
 * True for a JSON object (not an array, not null).
 * @param {unknown} value
 * @returns {boolean}
 */
function isDocument(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * The parsed body, or a 415 (a body of a type no parser took) / 400 (no body).
 * @param {import("express").Request} req
 * @param {string} accepted human-readable list of accepted types
 */
function parsedBody(req, accepted) {
  if (req.body !== undefined) return req.body;
  const hasBody = req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"]) > 0;
  if (hasBody) {
    const type = req.headers["content-type"] || "(none)";
    throw new HttpError(415, "UnsupportedMediaType", `content type ${type} is not supported here; send ${accepted}. For JSON, ${SEND_JSON_HINT}`);
  }
  throw catalogueError(ERROR.InvalidDocument, `the request needs a body: ${accepted}`);
}

/** `?merge=true|false|1|0` -> boolean; anything else is a 400. */
function booleanQuery(req, name) {
  const raw = req.query[name];
  if (raw === undefined) return false;
  const v = Array.isArray(raw) ? raw[raw.length - 1] : String(raw);
  if (["true", "1", "yes", ""].includes(v.toLowerCase())) return true;
  if (["false", "0", "no"].includes(v.toLowerCase())) return false;
  throw new HttpError(400, "BadRequest", `query parameter ${name} must be true or false, got ${JSON.stringify(v)}`);
}

/** How long one health() answer serves /healthz, one experts() answer /experts (a flood costs the server one call per this). */
const SHARED_FRESH_MS = 200;

/**
 * Build the bridge's Express app.
 * @param {object} deps
 * @param {import("./rpc").ExpertdClient} deps.rpc the long-lived RPC client wrapper
 * @param {import("pino").Logger} [deps.logger] defaults to a silent logger
 * @param {string|null} [deps.token] when set, every route but /healthz needs `Authorization: Bearer <token>`
 * @param {number|string} [deps.bodyLimit="1mb"] largest request body (bytes or "100kb")
 * @param {number} [deps.healthTimeoutMs=1000] how long /healthz waits for `health()`
 * @param {ReturnType<typeof createMetrics>} [deps.metrics] defaults to a fresh registry
 * @param {number} [deps.jsonMaxDepth=64] deepest nesting of arrays/objects a JSON body may have (else 400)
 * @param {string[]} [deps.corsOrigins=[]] origins browsers may call from (cors.js; none by default)
 * @returns {import("express").Express}
 */
function createApp({ rpc, logger = pino({ level: "silent" }), token = null, bodyLimit = "1mb", healthTimeoutMs = 1000, metrics, corsOrigins = [], jsonMaxDepth = 64 } = {}) {
  if (!rpc) throw new TypeError("createApp needs { rpc }");
  metrics = metrics || createMetrics({ rpc });

  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.locals.metrics = metrics;
  app.locals.rpc = rpc;

  const auth = bearerAuth(token);
  // JSON, also when curl -d sent it as a form or a client left the Content-Type out (body.js).
  const checkJson = limitJsonDepth(jsonMaxDepth);
  const jsonBody = bodyParsers({ limit: bodyLimit, forms: false, checkJson });
  const jsonOrFormBody = bodyParsers({ limit: bodyLimit, forms: true, checkJson });

  // An expert label only for names the server has reported (or that just
  // answered), so that made-up names cannot blow up metric cardinality.
  const expertLabel = (name, status) => (status < 400 || rpc.knownExperts.has(name) ? name : "(other)");

  app.use(requestLog({ logger, observe: metrics.observeRequest, expertLabel }));
  app.use(corsPolicy(corsOrigins));
  app.use(
    helmet({
      contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
      frameguard: { action: "deny" },
    }),
  );
  app.use((req, res, next) => {
    res.set("Cache-Control", "no-store");
    next();
  });
  app.use(pageRouter({ tagRoute })); // GET / (the page), /docs (Swagger UI), their assets

  /** Call the server, timing the RPC for /metrics. */
  async function rpcCall(method, fn) {
    const started = process.hrtime.bigint();
    let outcome = "ok";
    try {
      return await fn();
    } catch (err) {
      outcome = err.remote ? "remote_error" : err.status === 504 ? "timeout" : err.status === 503 ? "unavailable" : "error";
      throw err;
    } finally {
      metrics.observeRpc({ method, outcome }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  const routes = new Map(); // path -> allowed methods (for 405)
  function route(method, path, { isPublic = false } = {}, ...handlers) {
    const allowed = routes.get(path) || [];
    allowed.push(method.toUpperCase());
    routes.set(path, allowed);
    app[method](path, tagRoute(path), ...(isPublic ? [] : [auth]), checkExpertName(), ...handlers);
  }

  // GETs are never shed (admission.js), and anyone may send /healthz: concurrent
  // requests share one RPC (shared_call.js), and its answer serves for SHARED_FRESH_MS.
  const serverHealth = sharedCall(() => rpcCall(METHOD.health, () => rpc.health({ timeoutMs: healthTimeoutMs })), { freshMs: SHARED_FRESH_MS });
  const serverExperts = sharedCall(() => rpcCall(METHOD.experts, () => rpc.experts()), { freshMs: SHARED_FRESH_MS });

  route("get", "/healthz", { isPublic: true }, async (req, res) => {
    try {
      const health = await serverHealth();
      res.json({ status: "ok", server: health });
    } catch (err) {
      const e = toHttpError(err);
      res.locals.errorName = e.name;
      res.status(503).set("Retry-After", "1").json({ status: "unavailable", ...errorBody({ name: e.name, message: e.message, status: 503 }) });
    }
  });

  route("get", "/metrics", {}, async (req, res) => {
    res.set("Content-Type", metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  route("get", "/experts", {}, async (req, res) => {
    res.json(await serverExperts());
  });

  // Public like /healthz (which already names the experts): the docs page needs it before the token.
  route("get", "/openapi.json", { isPublic: true }, openApiHandler({ rpc: { experts: serverExperts }, auth: Boolean(token) }));

  route("get", "/stats", {}, async (req, res) => {
    res.json(await rpcCall(METHOD.stats, () => rpc.stats()));
  });

  route("post", "/experts/:name", {}, jsonOrFormBody, async (req, res) => {
    const body = parsedBody(req, "a JSON object (application/json) or a form (text=...)");
    if (!isDocument(body)) {
      throw catalogueError(ERROR.InvalidDocument, `the body must be a JSON object (a document), got ${jsonType(body)}`);
    }
    const merge = booleanQuery(req, "merge");
    const doc = { ...body }; // form bodies have a null prototype
    const { name } = req.params;
    // Coalesced with concurrent requests for the same expert (see coalescer.js);
    // the body's size bounds the batch's size in bytes.
    if (!merge) {
      const bytes = Number(req.headers["content-length"]) || undefined;
      return res.json(await rpcCall(METHOD.opinion, () => rpc.opinion(name, doc, { bytes, trace: req.trace })));
    }
    // The server merges: an opinion the document carried that failed its expert's check (a
    // forged one) is replaced by the one it recomputed, and said under `recomputed`; the
    // document's own value is never copied in beside what the server answered.
    const answered = await rpcCall(METHOD.opinions, () => rpc.opinions(doc, [name], { include_needs: false }, { trace: req.trace }));
    const error = isDocument(answered) && isDocument(answered.errors) ? answered.errors[name] : undefined;
    if (error) throw new RemoteError(error.name, error.message); // as opinion() would fail
    res.json(answered);
  });

  route("post", "/experts/:name/batch", {}, jsonBody, async (req, res) => {
    const body = parsedBody(req, "a JSON array of documents (application/json)");
    if (!Array.isArray(body)) {
      throw catalogueError(ERROR.InvalidDocument, `the body must be a JSON array of documents, got ${jsonType(body)}`);
    }
    res.json(await rpcCall(METHOD.batch, () => rpc.batch(req.params.name, body, { trace: req.trace })));
  });

  route("post", "/experts/:name/stream", {}, streamHandler({ rpc, maxLineBytes: parseBytes(bodyLimit), maxDepth: jsonMaxDepth, rpcCall }));

  route("post", "/opinions", {}, jsonBody, async (req, res) => {
    const body = parsedBody(req, 'a JSON object {"doc": {...}, "experts": [...]} (application/json)');
    if (!isDocument(body)) {
      throw catalogueError(ERROR.InvalidDocument, `the body must be a JSON object {"doc": {...}, "experts": [...]}, got ${jsonType(body)}`);
    }
    if (!isDocument(body.doc)) {
      throw catalogueError(ERROR.InvalidDocument, `"doc" must be a JSON object, got ${body.doc === undefined ? "nothing" : jsonType(body.doc)}`);
    }
    const names = body.experts ?? null;
    if (names !== null && !(Array.isArray(names) && names.every((n) => typeof n === "string"))) {
      throw catalogueError(ERROR.BadArguments, `"experts" must be an array of expert names (or omitted for all), got ${jsonType(names)}`);
    }
    res.json(await rpcCall(METHOD.opinions, () => rpc.opinions(body.doc, names, undefined, { trace: req.trace })));
  });

  mountLearn(route, { rpc, rpcCall, parsedBody, parsers: jsonOrFormBody });
  mountCallsView(route, { rpc, rpcCall });

  // A known path with another method: 405 with Allow (after auth, like the rest).
  for (const [path, allowed] of routes) {
    const isPublic = path === "/healthz";
    app.all(path, tagRoute(path), ...(isPublic ? [] : [auth]), (req, res, next) => {
      res.set("Allow", [...new Set([...allowed, ...(allowed.includes("GET") ? ["HEAD"] : [])])].join(", "));
      next(new HttpError(405, "MethodNotAllowed", `${req.method} is not allowed on ${path}; use ${allowed.join(" or ")}`));
    });
  }

  app.use(auth); // unknown paths need the token too: no probing without it
  app.use(notFound());
  app.use(errorHandler(logger));
  return app;
}

module.exports = { createApp, isDocument };
