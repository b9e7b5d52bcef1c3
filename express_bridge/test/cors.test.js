"use strict";
/**
 * CORS: nothing allowed by default; an allow-list (CORS_ORIGINS) lets those
 * origins call, preflights answered before the token; other origins get a 403
 * preflight that says what to set. Against a real expertd (odd_experts.yaml).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const request = require("supertest");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { loadConfig, ConfigError } = require("../src/config");
const { startExpertd, REPO_ROOT } = require("./helpers");

const GOOD = "https://app.example.com";
const EVIL = "https://evil.example.net";
const TOKEN = "cors-test-token";

describe("CORS", { timeout: 120000 }, () => {
  let server;
  let rpc;
  let closed;
  let open;

  before(async () => {
    server = await startExpertd({ config: path.join(REPO_ROOT, "tests", "odd_experts.yaml") });
    rpc = new ExpertdClient({ endpoint: server.endpoint });
    closed = createApp({ rpc });
    open = createApp({ rpc, token: TOKEN, corsOrigins: loadConfig({ CORS_ORIGINS: `${GOOD}, http://localhost:5173` }).corsOrigins });
  });

  after(async () => {
    if (rpc) await rpc.close();
    if (server) await server.stop();
  });

  const preflight = (app, origin, method = "POST", headers = "content-type, authorization") =>
    request(app).options("/experts/vader").set("Origin", origin).set("Access-Control-Request-Method", method).set("Access-Control-Request-Headers", headers);

  it("allows nothing by default: preflights get 403 and answers carry no Access-Control-Allow-Origin", async () => {
    const pre = await preflight(closed, GOOD).expect(403);
    assert.equal(pre.headers["access-control-allow-origin"], undefined);
    assert.equal(pre.body.error.name, "CorsOriginNotAllowed");
    assert.match(pre.body.error.message, /CORS_ORIGINS/);
    const res = await request(closed).post("/experts/vader").set("Origin", GOOD).send({ text: "good" }).expect(200);
    assert.equal(res.headers["access-control-allow-origin"], undefined);
    assert.match(res.headers.vary || "", /Origin/);
  });

  it("answers an allowed origin's preflight with 204, before the token", async () => {
    const res = await preflight(open, GOOD).expect(204);
    assert.equal(res.headers["access-control-allow-origin"], GOOD);
    assert.match(res.headers["access-control-allow-methods"], /POST/);
    assert.match(res.headers["access-control-allow-headers"], /Authorization/);
    assert.match(res.headers["access-control-allow-headers"], /Content-Type/);
    assert.ok(Number(res.headers["access-control-max-age"]) > 0);
    assert.match(res.headers.vary || "", /Origin/);
    const local = await preflight(open, "http://localhost:5173", "GET", "authorization").expect(204);
    assert.equal(local.headers["access-control-allow-origin"], "http://localhost:5173");
  });

  it("lets an allowed origin call with the token and read the answer and X-Request-Id", async () => {
    const res = await request(open).post("/experts/vader").set("Origin", GOOD).set("Authorization", `Bearer ${TOKEN}`).send({ text: "I love it" }).expect(200);
    assert.equal(res.headers["access-control-allow-origin"], GOOD);
    assert.match(res.headers["access-control-expose-headers"], /X-Request-Id/);
    assert.equal(res.body.label, "positive");
    const denied = await request(open).get("/experts").set("Origin", GOOD).expect(401);
    assert.equal(denied.headers["access-control-allow-origin"], GOOD, "a browser can read the 401 and ask for the token");
  });

  it("refuses another origin's preflight, even with an allow-list", async () => {
    const res = await preflight(open, EVIL).expect(403);
    assert.equal(res.headers["access-control-allow-origin"], undefined);
    assert.equal(res.body.error.name, "CorsOriginNotAllowed");
    const plain = await request(open).get("/healthz").set("Origin", EVIL).expect(200);
    assert.equal(plain.headers["access-control-allow-origin"], undefined);
  });

  it("an OPTIONS request that is not a preflight is still a 405", async () => {
    await request(closed).options("/experts/vader").expect(405);
  });

  it("CORS_ORIGINS must hold origins; '*' allows any", () => {
    assert.deepEqual(loadConfig({}).corsOrigins, []);
    assert.deepEqual(loadConfig({ CORS_ORIGINS: "https://A.example.com/,*" }).corsOrigins, ["https://a.example.com", "*"]);
    assert.throws(() => loadConfig({ CORS_ORIGINS: "https://a.example.com/path" }), (err) => err instanceof ConfigError && /CORS_ORIGINS: not an origin/.test(err.message));
    assert.throws(() => loadConfig({ CORS_ORIGINS: "app.example.com" }), ConfigError);
    assert.throws(() => loadConfig({ CORS_ORIGINS: "ftp://a.example.com" }), ConfigError);
  });

  it("'*' answers any origin's preflight", async () => {
    const any = createApp({ rpc, corsOrigins: ["*"] });
    const res = await preflight(any, EVIL).expect(204);
    assert.equal(res.headers["access-control-allow-origin"], "*");
  });
});
