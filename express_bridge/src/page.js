"use strict";
/**
 * The page to try and watch the experts (`GET /`), and interactive API docs
 * (`GET /docs`, Swagger UI from the swagger-ui-dist npm package), served from
 * this process: no CDN, no inline script. Both are public (they hold no
 * data); the routes they call ask for the token when the bridge has one.
 */

const path = require("node:path");
const express = require("express");
const swaggerUiDist = require("swagger-ui-dist");

const PUBLIC_DIR = path.join(__dirname, "..", "public");
const SWAGGER_DIR = swaggerUiDist.getAbsoluteFSPath();
/** Only the Swagger UI files the docs page loads. */
const SWAGGER_FILES = new Set(["swagger-ui-bundle.js", "swagger-ui.css"]);

/**
 * The page's Content-Security-Policy: scripts, styles and pictures from this
 * origin only (data: pictures are Swagger UI's icons), calls to this origin only.
 */
const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/**
 * A router for `/`, `/docs`, `/favicon.ico`, `/assets/*` (public/) and `/vendor/swagger-ui/*`.
 * @param {{tagRoute: (pattern: string) => import("express").RequestHandler}} options
 * @returns {import("express").Router}
 */
function pageRouter({ tagRoute }) {
  const router = express.Router();
  const csp = (req, res, next) => {
    res.set("Content-Security-Policy", PAGE_CSP);
    next();
  };
  const file = (name) => (req, res) => res.sendFile(path.join(PUBLIC_DIR, name));
  const staticOptions = { index: false, dotfiles: "ignore", fallthrough: true, redirect: false };

  router.get("/", tagRoute("/"), csp, file("index.html"));
  router.get("/docs", tagRoute("/docs"), csp, file("docs.html"));
  router.get("/favicon.ico", tagRoute("/favicon.ico"), (req, res) => res.type("png").sendFile(path.join(SWAGGER_DIR, "favicon-32x32.png")));
  router.use("/assets", tagRoute("/assets"), csp, express.static(path.join(PUBLIC_DIR, "assets"), staticOptions));
  router.use(
    "/vendor/swagger-ui",
    tagRoute("/vendor/swagger-ui"),
    (req, res, next) => (SWAGGER_FILES.has(req.path.slice(1)) ? next() : next("router")),
    csp,
    express.static(SWAGGER_DIR, staticOptions),
  );
  return router;
}

module.exports = { pageRouter, PAGE_CSP };
