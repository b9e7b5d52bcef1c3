"use strict";
/** Small Express middlewares: request id + access log, bearer-token auth, route tagging. */

const crypto = require("node:crypto");
const { HttpError } = require("./errors");

/** An incoming X-Request-Id is kept only if it matches (no log injection). */
const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Give every request an id (a well-formed incoming X-Request-Id, else a new
 * UUID), echo it in the X-Request-Id response header, and write one log line
 * when the response ends: method, route, path, status, latency, request id,
 * expert. Also feeds the request metrics.
 * @param {object} options
 * @param {{info: Function, warn: Function}} options.logger pino-style logger
 * @param {(labels: object, seconds: number) => void} [options.observe] metrics hook
 * @param {(name: string, status: number) => string} [options.expertLabel] bounds the expert label
 * @returns {import("express").RequestHandler}
 */
function requestLog({ logger, observe = () => {}, expertLabel = (name) => name }) {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const incoming = req.get("x-request-id");
    req.id = incoming && REQUEST_ID_RE.test(incoming) ? incoming : crypto.randomUUID();
    res.setHeader("X-Request-Id", req.id);
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
        method: req.method,
        route,
        path: req.path.length > 200 ? `${req.path.slice(0, 200)}...` : req.path,
        status,
        ms: Math.round(seconds * 1e6) / 1e3,
      };
      if (expert) line.expert = expert;
      if (res.locals.errorName) line.error = res.locals.errorName;
      (status >= 500 ? logger.warn : logger.info).call(logger, line, "request");
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
    if (req.params && typeof req.params.name === "string") res.locals.expert = req.params.name;
    next();
  };
}

module.exports = { requestLog, bearerAuth, tagRoute, REQUEST_ID_RE };
