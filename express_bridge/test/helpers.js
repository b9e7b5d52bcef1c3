"use strict";
/**
 * Test helpers: start a REAL expertd server (no mocks), find free ports,
 * capture log lines.
 *
 * EXPERTD_BIN overrides the server binary (default: <repo>/.venv/bin/expertd);
 * EXPERTD_TEST_CONFIG overrides the experts file (default: test/experts.yaml).
 */

const { spawn } = require("node:child_process");
const net = require("node:net");
const path = require("node:path");
const { Writable } = require("node:stream");
const zerorpc = require("zerorpc");

const REPO_ROOT = path.resolve(__dirname, "..", "..");
const EXPERTD_BIN = process.env.EXPERTD_BIN || path.join(REPO_ROOT, ".venv", "bin", "expertd");
const EXPERTS_CONFIG = process.env.EXPERTD_TEST_CONFIG || path.join(__dirname, "experts.yaml");
const READY_TIMEOUT_MS = Number(process.env.EXPERTD_READY_TIMEOUT_MS || 90000);

/** A TCP port that was free a moment ago on 127.0.0.1. @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Call `health()` once with a plain zerorpc client (independent of src/rpc.js).
 * @returns {Promise<object|null>} the health answer, or null
 */
function healthOnce(endpoint, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const client = new zerorpc.Client({ timeout: Math.ceil(timeoutMs / 1000) + 1 });
    client.on("error", () => {});
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      setImmediate(() => {
        try {
          client.close(0);
        } catch {
          /* closed */
        }
      });
      resolve(value);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    client.connect(endpoint);
    client.invoke("health", (err, res) => finish(err ? null : res));
  });
}

/**
 * Start `expertd serve` on 127.0.0.1:<port> and wait (up to 90 s: TensorFlow
 * loads slowly) until `health()` answers.
 * @param {{port?: number, config?: string, args?: string[], readyTimeoutMs?: number}} [options]
 * @returns {Promise<{endpoint: string, port: number, pid: number, output: () => string,
 *   stop: (signal?: string) => Promise<void>, exited: () => object|null}>}
 */
async function startExpertd({ port, config = EXPERTS_CONFIG, args = [], readyTimeoutMs = READY_TIMEOUT_MS } = {}) {
  port = port || (await freePort());
  const endpoint = `tcp://127.0.0.1:${port}`;
  const argv = ["serve", "--config", config, "--bind", endpoint, "--drain-timeout", "2", ...args];
  const proc = spawn(EXPERTD_BIN, argv, {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: process.env.TF_CPP_MIN_LOG_LEVEL || "2" },
  });
  let log = "";
  const keep = (chunk) => {
    log = (log + chunk.toString()).slice(-20000);
  };
  proc.stdout.on("data", keep);
  proc.stderr.on("data", keep);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on("exit", (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    proc.on("error", (err) => {
      exited = { code: null, signal: null, error: err };
      resolve(exited);
    });
  });

  const stop = async (signal = "SIGTERM") => {
    if (exited) return;
    proc.kill(signal);
    let timer;
    const res = await Promise.race([exitPromise, new Promise((r) => (timer = setTimeout(r, 10000, null)))]);
    clearTimeout(timer);
    if (!res) {
      proc.kill("SIGKILL");
      await exitPromise;
    }
  };

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) {
      const why = exited.error ? exited.error.message : `code ${exited.code}, signal ${exited.signal}`;
      throw new Error(`expertd exited before it was ready (${why}): ${EXPERTD_BIN} ${argv.join(" ")}\n--- its output ---\n${log}`);
    }
    const health = await healthOnce(endpoint, 1000);
    if (health && health.status === "ok") break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`expertd did not answer health() within ${readyTimeoutMs} ms\n--- its output ---\n${log}`);
    }
    await sleep(250);
  }
  return { endpoint, port, pid: proc.pid, output: () => log, stop, exited: () => exited };
}

/**
 * A writable stream that keeps each JSON log line pino writes to it.
 * @returns {{stream: Writable, lines: object[]}}
 */
function logCapture() {
  const lines = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split("\n")) {
        if (line.trim()) lines.push(JSON.parse(line));
      }
      cb();
    },
  });
  return { stream, lines };
}

const SERVER_JS = path.join(__dirname, "..", "src", "server.js");

/**
 * Start the bridge as a process (`node src/server.js`); `ready` resolves to its
 * URL once it logs that it listens, `lines` collects its JSON log lines.
 * @param {Record<string, string>} env
 */
function startBridge(env) {
  // A loaded test machine's event-loop lag must not shed the tests' requests (unless a test asks).
  const proc = spawn(process.execPath, [SERVER_JS], { env: { PATH: process.env.PATH, ADMIT_MAX_LAG_MS: "0", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines = [];
  let buf = "";
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    proc.stdout.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        lines.push(line);
        if (line.msg === "expertd bridge listening") resolve(line.url);
      }
    });
    exited.then((e) => reject(new Error(`bridge exited early (${JSON.stringify(e)}): ${stderr}`)));
  });
  return { proc, lines, ready, exited };
}

module.exports = { startBridge, REPO_ROOT, EXPERTD_BIN, EXPERTS_CONFIG, freePort, startExpertd, healthOnce, logCapture, sleep };
