"use strict";
/**
 * Cross-origin requests (the `cors` package), for an allow-list of origins
 * only: CORS_ORIGINS, comma-separated, e.g.
 * `CORS_ORIGINS=https://app.example.com,http://localhost:5173` (`*`: any).
 * Nothing is allowed by default.
 *
 * - A request from an allowed origin gets Access-Control-Allow-Origin (and
 *   Vary: Origin); its preflight (`OPTIONS` with Access-Control-Request-Method)
 *   is answered 204 with the methods and headers the bridge takes, before
 *   the token is checked (browsers never send credentials on a preflight).
 * - A preflight from any other origin is answered 403 with a JSON error that
 *   names the origin and the variable to set; other requests from it are
 *   served without CORS headers, so the browser keeps their answers from
 *   the page that asked.
 */

const cors = require("cors");
const { HttpError } = require("./errors");

const ALLOWED_METHODS = ["GET", "HEAD", "POST"];
const ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Request-Id"];
const EXPOSED_HEADERS = ["X-Request-Id", "Retry-After"];
const MAX_AGE_S = 600;

/**
 * Parse CORS_ORIGINS: each entry an origin (`scheme://host[:port]`, no path), or `*`.
 * @param {string|undefined} raw
 * @returns {string[]} normalised origins (empty: none allowed)
 * @throws {Error} naming the entry that is not an origin
 */
function parseOrigins(raw) {
  if (raw === undefined || String(raw).trim() === "") return [];
  const out = [];
  for (const entry of String(raw).split(",").map((s) => s.trim()).filter(Boolean)) {
    if (entry === "*") {
      out.push("*");
      continue;
    }
    let url;
    try {
      url = new URL(entry);
    } catch {
      throw new Error(`not an origin: ${JSON.stringify(entry)} (use scheme://host[:port], e.g. https://app.example.com)`);
    }
    if (!["http:", "https:"].includes(url.protocol) || url.pathname !== "/" || url.search || url.hash || url.username) {
      throw new Error(`not an origin: ${JSON.stringify(entry)} (scheme://host[:port] only, no path, e.g. https://app.example.com)`);
    }
    out.push(url.origin);
  }
  return [...new Set(out)];
}

/**
 * The CORS middleware for an allow-list.
 * @param {string[]} origins from parseOrigins (empty: nothing allowed)
 * @returns {import("express").RequestHandler}
 */
function corsPolicy(origins) {
  const any = origins.includes("*");
  const allowed = new Set(origins);
  const isAllowed = (origin) => any || allowed.has(origin);
  const handle = cors({
    origin: (origin, cb) => cb(null, any ? "*" : origin),
    methods: ALLOWED_METHODS,
    allowedHeaders: ALLOWED_HEADERS,
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: MAX_AGE_S,
    optionsSuccessStatus: 204,
  });
  return (req, res, next) => {
    const origin = req.headers.origin;
    if (origin === undefined) return next();
    const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
    if (isAllowed(origin)) return handle(req, res, next);
    if (preflight) {
      res.vary("Origin");
      return next(new HttpError(403, "CorsOriginNotAllowed",
        `origin ${origin.slice(0, 200)} may not call this bridge from a browser; add it to CORS_ORIGINS (comma-separated) to allow it`));
    }
    res.vary("Origin");
    next();
  };
}

module.exports = { corsPolicy, parseOrigins, ALLOWED_HEADERS, ALLOWED_METHODS };
