"use strict";
/** Configuration parsing and the refusal to expose the bridge without a token. */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const net = require("node:net");
const path = require("node:path");
const { loadConfig, assertSafeToListen, isLoopbackHost, parseBytes, ConfigError } = require("../src/config");
const { freePort } = require("./helpers");

const SERVER_JS = path.join(__dirname, "..", "src", "server.js");

/** Run `node src/server.js` with env; resolve {code, stdout, stderr} when it exits (or after ms). */
function runServer(env, ms = 8000) {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [SERVER_JS], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => (stdout += d));
    proc.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function portIsClosed(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.on("error", () => resolve(true));
  });
}

describe("config", () => {
  it("has safe defaults", () => {
    const c = loadConfig({});
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.port, 3000);
    assert.equal(c.endpoint, "tcp://127.0.0.1:4242");
    assert.equal(c.token, null);
    assert.equal(c.bodyLimit, 1024 * 1024);
    assert.equal(c.rpcTimeoutMs, 30000);
    assert.equal(c.probeTimeoutMs, 1000);
    assert.deepEqual(c.coalesce, { maxBatch: 64, maxBytes: 4 * 1024 * 1024, waitMs: 0, inFlight: 2, maxQueue: 256 });
    assert.equal(c.jsonMaxDepth, 64);
  });

  it("reads the coalescing knobs (COALESCE_MAX=1 turns coalescing off)", () => {
    const c = loadConfig({ COALESCE_MAX: "16", COALESCE_MAX_BYTES: "512kb", COALESCE_WAIT_MS: "0.5", COALESCE_IN_FLIGHT: "4", COALESCE_MAX_QUEUE: "32" });
    assert.deepEqual(c.coalesce, { maxBatch: 16, maxBytes: 512 * 1024, waitMs: 0.5, inFlight: 4, maxQueue: 32 });
    assert.equal(loadConfig({ JSON_MAX_DEPTH: "10" }).jsonMaxDepth, 10);
    assert.equal(loadConfig({ COALESCE_MAX: "1" }).coalesce.maxBatch, 1);
  });

  it("reads the pool size (EXPERTD_CONNECTIONS, default 4) and refuses a bad one by name", () => {
    assert.equal(loadConfig({}).connections, 4);
    assert.equal(loadConfig({ EXPERTD_CONNECTIONS: "8" }).connections, 8);
    for (const bad of ["0", "-1", "1.5", "many"]) {
      assert.throws(() => loadConfig({ EXPERTD_CONNECTIONS: bad }), (err) => err instanceof ConfigError && /EXPERTD_CONNECTIONS/.test(err.message), bad);
    }
  });

  it("reads the admission knobs (ADMIT_*), with shedding on by default", () => {
    assert.deepEqual(loadConfig({}).admission, { maxInFlight: 256, maxStreams: 32, adaptive: true, maxLagMs: 100 });
    assert.deepEqual(loadConfig({ ADMIT_MAX_IN_FLIGHT: "32", ADMIT_MAX_STREAMS: "4", ADMIT_ADAPTIVE: "off", ADMIT_MAX_LAG_MS: "0" }).admission,
      { maxInFlight: 32, maxStreams: 4, adaptive: false, maxLagMs: 0 });
    for (const [env, re] of [
      [{ ADMIT_MAX_IN_FLIGHT: "-1" }, /ADMIT_MAX_IN_FLIGHT/],
      [{ ADMIT_MAX_STREAMS: "lots" }, /ADMIT_MAX_STREAMS/],
      [{ ADMIT_MAX_IN_FLIGHT: "many" }, /ADMIT_MAX_IN_FLIGHT/],
      [{ ADMIT_ADAPTIVE: "maybe" }, /ADMIT_ADAPTIVE/],
      [{ ADMIT_MAX_LAG_MS: "-5" }, /ADMIT_MAX_LAG_MS/],
    ]) {
      assert.throws(() => loadConfig(env), (err) => err instanceof ConfigError && re.test(err.message), JSON.stringify(env));
    }
  });

  it("reads the environment", () => {
    const c = loadConfig({
      HOST: "::1",
      PORT: "8080",
      EXPERTD_ENDPOINT: "tcp://127.0.0.1:5000",
      EXPERTD_HTTP_TOKEN: "abc",
      BODY_LIMIT: "200kb",
      RPC_TIMEOUT: "1.5",
      RPC_PROBE_TIMEOUT: "0.25",
      LOG_LEVEL: "warn",
    });
    assert.deepEqual(
      { host: c.host, port: c.port, endpoint: c.endpoint, token: c.token, bodyLimit: c.bodyLimit, rpc: c.rpcTimeoutMs, probe: c.probeTimeoutMs, level: c.logLevel },
      { host: "::1", port: 8080, endpoint: "tcp://127.0.0.1:5000", token: "abc", bodyLimit: 200 * 1024, rpc: 1500, probe: 250, level: "warn" },
    );
  });

  it("rejects malformed values with the variable's name", () => {
    for (const [env, re] of [
      [{ PORT: "99999" }, /PORT/],
      [{ PORT: "http" }, /PORT/],
      [{ BODY_LIMIT: "lots" }, /BODY_LIMIT/],
      [{ RPC_TIMEOUT: "0" }, /RPC_TIMEOUT/],
      [{ RPC_TIMEOUT: "-1" }, /RPC_TIMEOUT/],
      [{ EXPERTD_ENDPOINT: "127.0.0.1:4242" }, /EXPERTD_ENDPOINT/],
      [{ LOG_LEVEL: "loud" }, /LOG_LEVEL/],
      [{ COALESCE_MAX: "0" }, /COALESCE_MAX/],
      [{ COALESCE_MAX: "2.5" }, /COALESCE_MAX/],
      [{ COALESCE_MAX: "many" }, /COALESCE_MAX/],
      [{ COALESCE_MAX_BYTES: "huge" }, /COALESCE_MAX_BYTES/],
      [{ COALESCE_WAIT_MS: "-1" }, /COALESCE_WAIT_MS/],
      [{ COALESCE_MAX_QUEUE: "0" }, /COALESCE_MAX_QUEUE/],
      [{ JSON_MAX_DEPTH: "deep" }, /JSON_MAX_DEPTH/],
      [{ COALESCE_WAIT_MS: "soon" }, /COALESCE_WAIT_MS/],
      [{ COALESCE_IN_FLIGHT: "0" }, /COALESCE_IN_FLIGHT/],
    ]) {
      assert.throws(() => loadConfig(env), (err) => err instanceof ConfigError && re.test(err.message), JSON.stringify(env));
    }
  });

  it("parses sizes", () => {
    assert.equal(parseBytes("1mb"), 1048576);
    assert.equal(parseBytes("512KB"), 524288);
    assert.equal(parseBytes("100"), 100);
    assert.equal(parseBytes(" 1.5 kb "), 1536);
    assert.throws(() => parseBytes("1 tb"));
  });

  it("knows loopback hosts", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]) assert.equal(isLoopbackHost(h), true, h);
    for (const h of ["0.0.0.0", "::", "", "10.0.0.1", "192.168.1.2", "example.com", "::ffff:10.0.0.1"]) assert.equal(isLoopbackHost(h), false, h);
  });

  it("refuses a non-loopback HOST without a token", () => {
    assert.throws(() => assertSafeToListen({ host: "0.0.0.0", token: null }), /refusing to listen on non-loopback HOST=0\.0\.0\.0/);
    assert.doesNotThrow(() => assertSafeToListen({ host: "0.0.0.0", token: "t" }));
    assert.doesNotThrow(() => assertSafeToListen({ host: "127.0.0.1", token: null }));
  });
});

describe("src/server.js as a process", { timeout: 60000 }, () => {
  it("exits non-zero, without listening, on HOST=0.0.0.0 with no token", async () => {
    const port = await freePort();
    const res = await runServer({ HOST: "0.0.0.0", PORT: String(port) });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /refusing to listen on non-loopback HOST=0\.0\.0\.0 without EXPERTD_HTTP_TOKEN/);
    assert.ok(await portIsClosed(port));
  });

  it("exits 2 with one line on a malformed EXPERTD_ENDPOINT, suggesting the fix", async () => {
    for (const [endpoint, suggestion] of [
      ["localhost:4242", "did you mean tcp://localhost:4242?"],
      ["tcp://127.0.0.1", "did you mean tcp://127.0.0.1:4242?"],
      ["http://localhost:3000", "expertd speaks ZeroMQ"],
    ]) {
      const port = await freePort();
      const res = await runServer({ EXPERTD_ENDPOINT: endpoint, PORT: String(port) });
      assert.equal(res.code, 2, endpoint);
      const lines = res.stderr.trim().split("\n");
      assert.equal(lines.length, 1, res.stderr);
      assert.ok(lines[0].startsWith("expertd bridge: EXPERTD_ENDPOINT: endpoint "), lines[0]);
      assert.ok(lines[0].includes(suggestion), lines[0]);
      assert.ok(await portIsClosed(port));
    }
  });

  it("exits non-zero on a malformed setting", async () => {
    const res = await runServer({ BODY_LIMIT: "a lot" });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /BODY_LIMIT/);
  });

  it("starts on HOST=0.0.0.0 when a token is set, and stops on SIGTERM with code 0", async () => {
    const port = await freePort();
    const proc = spawn(process.execPath, [SERVER_JS], {
      env: { PATH: process.env.PATH, HOST: "0.0.0.0", PORT: String(port), EXPERTD_HTTP_TOKEN: "tok", EXPERTD_ENDPOINT: `tcp://127.0.0.1:${await freePort()}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    await new Promise((resolve, reject) => {
      proc.stdout.on("data", (d) => {
        out += d;
        if (out.includes("expertd bridge listening")) resolve();
      });
      proc.on("exit", () => reject(new Error(`exited early: ${out}`)));
    });
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 503); // no expertd there
    const denied = await fetch(`http://127.0.0.1:${port}/experts`);
    assert.equal(denied.status, 401);
    const exit = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
    proc.kill("SIGTERM");
    assert.deepEqual(await exit, { code: 0, signal: null });
  });
});
