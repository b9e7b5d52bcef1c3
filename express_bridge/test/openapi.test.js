"use strict";
/**
 * GET /openapi.json against a real expertd (odd_experts.yaml): OpenAPI 3.1,
 * every route the app has, one set of paths per expert with its field and
 * the opinion schema the expert declares (schemathesis runs the bridge
 * against this document: tests/e2e/test_openapi_schemathesis.py).
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const request = require("supertest");
const { createApp } = require("../src/app");
const { buildOpenApi } = require("../src/openapi");
const { ExpertdClient } = require("../src/rpc");
const { startExpertd, REPO_ROOT } = require("./helpers");

describe("GET /openapi.json", { timeout: 120000 }, () => {
  let server;
  let rpc;
  let app;

  before(async () => {
    server = await startExpertd({ config: path.join(REPO_ROOT, "tests", "odd_experts.yaml") });
    rpc = new ExpertdClient({ endpoint: server.endpoint });
    app = createApp({ rpc, token: "t0ken" });
  });

  after(async () => {
    if (rpc) await rpc.close();
    if (server) await server.stop();
  });

  it("is OpenAPI 3.1, needs no token, and declares the bearer token for the rest", async () => {
    const res = await request(app).get("/openapi.json").expect(200).expect("Content-Type", /json/);
    assert.equal(res.body.openapi, "3.1.0");
    assert.deepEqual(res.body.security, [{ bearer: [] }]);
    assert.equal(res.body.components.securitySchemes.bearer.scheme, "bearer");
    assert.deepEqual(res.body.paths["/healthz"].get.security, []);
  });

  it("covers every route of the app, once per expert for /experts/:name...", async () => {
    const doc = (await request(app).get("/openapi.json").expect(200)).body;
    const experts = (await request(app).get("/experts").set("Authorization", "Bearer t0ken").expect(200)).body;
    const names = experts.map((e) => e.name);
    assert.deepEqual(names.sort(), ["failing", "shouting", "slow", "vader"]);
    const routes = app.router.stack
      .filter((layer) => layer.route && Object.keys(layer.route.methods).length < 5) // not the 405 catch-alls
      .flatMap((layer) => Object.keys(layer.route.methods).map((m) => [m, layer.route.path]));
    assert.ok(routes.length >= 8, JSON.stringify(routes));
    for (const [method, route] of routes) {
      if (["/", "/docs", "/favicon.ico"].includes(route)) continue; // the page, not the API
      const concrete = route.includes(":name") ? names.map((n) => route.replace(":name", n)) : [route];
      for (const p of concrete) {
        assert.ok(doc.paths[p] && doc.paths[p][method], `${method.toUpperCase()} ${p} is in the document`);
      }
    }
  });

  it("carries each expert's field and declared opinion schema", async () => {
    const doc = (await request(app).get("/openapi.json").expect(200)).body;
    const schemas = doc.components.schemas;
    assert.deepEqual(schemas.Opinion_vader.required, ["compound", "pos", "neu", "neg", "label"]);
    assert.deepEqual(schemas.Opinion_shouting.required, ["ratio"]);
    assert.equal(schemas.Opinion_failing.type, "object", "no declared schema: any object");
    assert.equal(schemas.Opinion_failing.required, undefined);
    assert.deepEqual(schemas.Document_vader.required, ["text"]);
    const op = doc.paths["/experts/vader"].post;
    assert.deepEqual(op.responses["200"].content["application/json"].schema.anyOf[0], { $ref: "#/components/schemas/Opinion_vader" });
    assert.ok(op.responses["422"] && op.responses["503"] && op.responses.default);
    assert.ok(doc.paths["/experts/vader/stream"].post.requestBody.content["application/x-ndjson"]);
  });

  it("reports opinion_schema in experts()", async () => {
    const experts = (await request(app).get("/experts").set("Authorization", "Bearer t0ken").expect(200)).body;
    const byName = Object.fromEntries(experts.map((e) => [e.name, e]));
    assert.equal(byName.vader.opinion_schema.properties.label.enum.length, 3);
    assert.equal(byName.shouting.opinion_schema.properties.ratio.type, "number");
    assert.equal(byName.failing.opinion_schema, null);
  });

  it("answers 503 with the error shape when no server has ever answered", async () => {
    const lonely = new ExpertdClient({ endpoint: "tcp://127.0.0.1:1", probeTimeoutMs: 300 });
    try {
      const res = await request(createApp({ rpc: lonely })).get("/openapi.json").expect(503);
      assert.equal(res.body.error.name, "ServerUnavailable");
    } finally {
      await lonely.close();
    }
  });
});

describe("buildOpenApi for an expert that reads the whole document", () => {
  it("asks for any JSON object, not one field", () => {
    const doc = buildOpenApi([{ name: "whole", version: "1", description: "", field: null, reads: "document" }]);
    const schema = doc.components.schemas.Document_whole;
    assert.equal(schema.type, "object");
    assert.equal(schema.required, undefined);
    const form = doc.paths["/experts/whole"].post.requestBody.content["application/x-www-form-urlencoded"].schema;
    assert.equal(form.required, undefined);
    assert.deepEqual(doc.components.schemas.Expert.properties.field.type, ["string", "null"]);
  });
});
