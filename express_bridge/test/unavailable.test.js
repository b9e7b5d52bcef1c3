"use strict";
/**
 * 503 when expertd does not answer: nothing listening on the port (refused),
 * or a TCP listener that never speaks ZeroMQ (a hung host). No mocks: the
 * bridge's real client talks to real sockets.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const net = require("node:net");
const request = require("supertest");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { freePort } = require("./helpers");

describe("expertd unreachable", { timeout: 60000 }, () => {
  describe("nothing listens on the port", () => {
    let rpc;
    let app;
    before(async () => {
      rpc = new ExpertdClient({ endpoint: `tcp://127.0.0.1:${await freePort()}`, timeoutMs: 5000, probeTimeoutMs: 1000 });
      app = createApp({ rpc });
    });
    after(() => rpc.close());

    it("/healthz is 503 JSON", async () => {
      const res = await request(app).get("/healthz").expect(503).expect("Content-Type", /json/);
      assert.equal(res.body.status, "unavailable");
      assert.equal(res.body.error.name, "ServerUnavailable");
      assert.equal(res.body.error.status, 503);
      assert.match(res.body.error.message, /connection refused/);
    });

    for (const [method, path, body] of [
      ["get", "/experts", undefined],
      ["post", "/experts/sentiment", { text: "hello" }],
      ["post", "/experts/sentiment/batch", [{ text: "hello" }]],
      ["post", "/opinions", { doc: { text: "hello" } }],
    ]) {
      it(`${method.toUpperCase()} ${path} is 503 ServerUnavailable, quickly`, async () => {
        const started = Date.now();
        const req = request(app)[method](path);
        const res = await (body === undefined ? req : req.send(body)).expect(503);
        assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
        assert.equal(res.body.error.name, "ServerUnavailable");
        assert.equal(res.headers["retry-after"], "1");
      });
    }

    it("checks that need no server still answer 400/415/413", async () => {
      await request(app).post("/experts/sentiment").set("Content-Type", "application/json").send("{").expect(400);
      await request(app).post("/experts/sentiment").set("Content-Type", "text/plain").send("x").expect(415);
      const small = createApp({ rpc, bodyLimit: 100 });
      await request(small).post("/experts/sentiment").send({ text: "x".repeat(200) }).expect(413);
    });

    it("/metrics says the server is down", async () => {
      const res = await request(app).get("/metrics").expect(200);
      assert.match(res.text, /^expertd_bridge_server_up 0$/m);
      assert.match(res.text, /expertd_bridge_rpc_duration_seconds_count\{method="opinion",outcome="unavailable"\} \d+/);
    });

    it("concurrent callers share one probe", async () => {
      const probes = await Promise.all(Array.from({ length: 20 }, () => rpc.probe({ maxAgeMs: 0 })));
      assert.ok(probes.every((p) => p === probes[0]));
      assert.equal(probes[0].ok, false);
    });
  });

  describe("a port that accepts TCP but never answers (hung host)", () => {
    let rpc;
    let app;
    let blackhole;
    const sockets = new Set();
    before(async () => {
      blackhole = net.createServer((s) => {
        sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => sockets.delete(s));
      });
      await new Promise((r) => blackhole.listen(0, "127.0.0.1", r));
      rpc = new ExpertdClient({ endpoint: `tcp://127.0.0.1:${blackhole.address().port}`, timeoutMs: 3000, probeTimeoutMs: 500 });
      app = createApp({ rpc });
    });
    after(async () => {
      await rpc.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => blackhole.close(r));
    });

    it("is 503 (not 504) after the probe timeout", async () => {
      const started = Date.now();
      const res = await request(app).post("/experts/sentiment").send({ text: "hello" }).expect(503);
      const took = Date.now() - started;
      assert.equal(res.body.error.name, "ServerUnavailable");
      assert.match(res.body.error.message, /no answer to health\(\) within 500 ms/);
      assert.ok(took >= 400 && took < 2500, `took ${took} ms`);
    });
  });
});
