"use strict";
/**
 * CurveZMQ from Node against a REAL expertd that encrypts and checks client
 * keys: the stock zerorpc client with curveOptions(), and the bridge process
 * (`node src/server.js`) configured only by EXPERTD_SERVER_KEY/EXPERTD_CLIENT_KEY.
 * Keys are made by the real `expertd keygen`.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const zerorpc = require("zerorpc");
const { curveOptions, secureClient, CurveConfigError } = require("../src/curve");
const { freePort } = require("./helpers");

const REPO_ROOT = path.resolve(__dirname, "..", "..");
const EXPERTD_BIN = process.env.EXPERTD_BIN || path.join(REPO_ROOT, ".venv", "bin", "expertd");
const BRIDGE = path.join(__dirname, "..", "src", "server.js");
const CONFIG = path.join(REPO_ROOT, "tests", "odd_experts.yaml"); // no TensorFlow
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One call with a stock zerorpc client; resolves {result} or {error}, or null after `ms`. */
function callOnce(endpoint, options, method, args, ms = 3000) {
  return new Promise((resolve) => {
    const client = new zerorpc.Client({ timeout: Math.ceil(ms / 1000) + 2 });
    client.on("error", () => {});
    secureClient(client, options);
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      setImmediate(() => client.close(0));
      resolve(value);
    };
    const timer = setTimeout(() => finish(null), ms);
    client.connect(endpoint);
    client.invoke(method, ...args, (error, result) => finish(error ? { error } : { result }));
  });
}

/** Start a process and keep its output. */
function launch(command, args, env) {
  const proc = spawn(command, args, { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout.on("data", (c) => (output += c));
  proc.stderr.on("data", (c) => (output += c));
  const exited = new Promise((resolve) => proc.on("exit", (code) => resolve(code)));
  return {
    proc,
    exited,
    output: () => output,
    stop: async () => {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      await Promise.race([exited, sleep(10000).then(() => proc.kill("SIGKILL"))]);
    },
  };
}

describe("CURVE from Node against a real expertd", { timeout: 120000 }, () => {
  let keys;
  let server;
  let endpoint;
  let goodEnv;

  before(async () => {
    keys = fs.mkdtempSync(path.join(os.tmpdir(), "expertd-curve-"));
    execFileSync(EXPERTD_BIN, ["keygen", "--dir", keys, "--client", "node", "--client", "bridge"], { cwd: REPO_ROOT });
    execFileSync(EXPERTD_BIN, ["keygen", "--dir", path.join(keys, "other")], { cwd: REPO_ROOT }); // a server key nobody uses
    endpoint = `tcp://127.0.0.1:${await freePort()}`;
    server = launch(EXPERTD_BIN, ["serve", "--config", CONFIG, "--bind", endpoint, "--curve-secret-key", path.join(keys, "server.key_secret"), "--authorized-keys", path.join(keys, "authorized")], {});
    goodEnv = { EXPERTD_SERVER_KEY: path.join(keys, "server.key"), EXPERTD_CLIENT_KEY: path.join(keys, "clients", "node.key_secret") };
    const deadline = Date.now() + 60000;
    for (;;) {
      const answer = await callOnce(endpoint, curveOptions(goodEnv), "health", [], 1000);
      if (answer && answer.result) break;
      if (server.proc.exitCode !== null || Date.now() > deadline) throw new Error(`expertd did not start:\n${server.output()}`);
      await sleep(200);
    }
  });

  after(async () => {
    if (server) await server.stop();
    if (keys) fs.rmSync(keys, { recursive: true, force: true });
  });

  it("the stock zerorpc client with the keys gets correct opinions", async () => {
    const answer = await callOnce(endpoint, curveOptions(goodEnv), "opinions", [{ text: "HEY you" }, ["shouting"]]);
    assert.deepEqual(answer.result.opinions, { shouting: { ratio: 0.5 } });
  });

  it("no keys, a wrong server key or an unauthorized key get no answer; the others still do", async () => {
    const wrongServer = curveOptions({ ...goodEnv, EXPERTD_SERVER_KEY: path.join(keys, "other", "server.key") });
    const unauthorized = curveOptions({ EXPERTD_SERVER_KEY: goodEnv.EXPERTD_SERVER_KEY }); // a throwaway pair
    const answers = await Promise.all([
      callOnce(endpoint, {}, "health", [], 2000),
      callOnce(endpoint, wrongServer, "health", [], 2000),
      callOnce(endpoint, unauthorized, "health", [], 2000),
    ]);
    assert.deepEqual(answers, [null, null, null]);
    const answer = await callOnce(endpoint, curveOptions(goodEnv), "shouting", [{ text: "ALL CAPS" }]);
    assert.deepEqual(answer.result, { ratio: 1 });
    assert.match(server.output(), /refused a connection from 127\.0\.0\.1: client key \S+ is not in/);
  });

  it("the bridge configured by EXPERTD_SERVER_KEY/EXPERTD_CLIENT_KEY answers over HTTP", async () => {
    const port = await freePort();
    const bridgeEnv = { ...goodEnv, EXPERTD_CLIENT_KEY: path.join(keys, "clients", "bridge.key_secret"), EXPERTD_ENDPOINT: endpoint, PORT: String(port), HOST: "127.0.0.1" };
    const bridge = launch(process.execPath, [BRIDGE], bridgeEnv);
    try {
      let res;
      const deadline = Date.now() + 30000;
      for (;;) {
        try {
          res = await fetch(`http://127.0.0.1:${port}/experts/shouting`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: "HEY you" }) });
          if (res.status === 200) break;
        } catch {
          /* not listening yet */
        }
        if (bridge.proc.exitCode !== null || Date.now() > deadline) throw new Error(`bridge did not answer (${res && res.status}):\n${bridge.output()}`);
        await sleep(200);
      }
      assert.deepEqual(await res.json(), { ratio: 0.5 });
    } finally {
      await bridge.stop();
    }
  });

  it("a bridge whose key file is missing refuses to start and names the variable", async () => {
    const bridge = launch(process.execPath, [BRIDGE], { EXPERTD_SERVER_KEY: path.join(keys, "nope.key"), EXPERTD_ENDPOINT: endpoint, PORT: String(await freePort()) });
    const code = await bridge.exited;
    assert.equal(code, 1);
    assert.match(bridge.output(), /EXPERTD_SERVER_KEY=\S*nope\.key: cannot read it/);
  });

  it("curveOptions is empty without keys and explains a half-set environment", () => {
    assert.deepEqual(curveOptions({}), {});
    assert.throws(() => curveOptions({ EXPERTD_CLIENT_KEY: "x" }), CurveConfigError);
    assert.throws(() => curveOptions({ EXPERTD_SERVER_KEY: path.join(keys, "clients", "node.key"), EXPERTD_CLIENT_KEY: path.join(keys, "clients", "node.key") }), /holds only a public key/);
  });
});
