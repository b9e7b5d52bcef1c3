"use strict";
/**
 * Helpers of the pool tests: `expertd serve --workers N` on a vader-only
 * experts file (no TensorFlow), the bridge app in this process on a real
 * port, an HTTP load that records every answer, and which worker pids a
 * fresh connection reaches.
 */

const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");
const zerorpc = require("zerorpc");
const { createApp } = require("../src/app");
const { ExpertdClient } = require("../src/rpc");
const { startExpertd, sleep } = require("./helpers");

/**
 * Write a one-expert experts file (vader, with `version`) into `dir`; rewriting it changes the model a reload loads.
 * @param {string} dir @param {string} version @param {string} [extra] more YAML under `experts:`
 * @returns {string} its path
 */
function writeVaderConfig(dir, version, extra = "") {
  const file = path.join(dir, "experts.yaml");
  fs.writeFileSync(file, `experts:\n  vader:\n    expert: expertd.experts.vader:VaderExpert\n    options: {version: "${version}"}\n${extra}`);
  return file;
}

/** A fresh temporary folder for one test's experts file. */
function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), "expertd-pool-"));
}

/**
 * Poll `fn` until it returns something truthy, or fail after `ms`.
 * @template T @param {() => T|Promise<T>} fn @param {number} ms @param {string} what
 * @returns {Promise<T>}
 */
async function waitFor(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * `expertd serve --workers N`, returned once the supervisor logs that every worker serves.
 * @param {{config: string, workers?: number, args?: string[]}} options
 */
async function startWorkers({ config, workers = 2, args = [] }) {
  const server = await startExpertd({ config, args: ["--workers", String(workers), ...args] });
  await waitFor(() => /\d+ workers serving/.test(server.output()), 120000, `${workers} workers serving`);
  return server;
}

/**
 * `{pid: health}` of the workers seen over fresh stock zerorpc connections, once `want` were seen.
 * @param {string} endpoint @param {number} want
 * @returns {Promise<Map<number, object>>}
 */
async function workerPids(endpoint, want, tries = 200) {
  const seen = new Map();
  for (let i = 0; i < tries && seen.size < want; i++) {
    const h = await callOnce(endpoint, "health");
    if (h) seen.set(h.pid, h);
  }
  return seen;
}

/**
 * `[health(), method(...args)]` on ONE fresh stock zerorpc connection (so both come from the same worker).
 * @returns {Promise<any>} the last answer, or null on an error
 */
function callOnce(endpoint, method, ...args) {
  return new Promise((resolve) => {
    const client = new zerorpc.Client({ timeout: 10, heartbeatInterval: 5000 });
    client.on("error", () => {});
    client.connect(endpoint);
    const done = (value) => {
      setImmediate(() => client.close(0));
      resolve(value);
    };
    if (method === "health") {
      client.invoke("health", (err, h) => done(err ? null : h));
      return;
    }
    client.invoke("health", (err, h) => {
      if (err) return done(null);
      client.invoke(method, ...args, (err2, answer) => done(err2 ? null : { health: h, answer }));
    });
  });
}

/**
 * The bridge app (src/app.js) in this process on a free port, over an ExpertdClient.
 * @param {object} rpcOptions ExpertdClient options (endpoint, connections, coalesce, ...)
 */
async function startBridgeApp(rpcOptions) {
  const rpc = new ExpertdClient({ timeoutMs: 20000, ...rpcOptions });
  const httpServer = http.createServer(createApp({ rpc, bodyLimit: "64kb" }));
  await new Promise((r) => httpServer.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${httpServer.address().port}`;
  await rpc.probe();
  return {
    rpc,
    url,
    close: async () => {
      await new Promise((r) => httpServer.close(r));
      httpServer.closeAllConnections();
      await rpc.close();
    },
  };
}

/**
 * `concurrency` loops POSTing one document to `url + path` until `stop()`; every answer is kept.
 * @returns {{results: {status: number, name?: string, start: number, end: number}[], stop: () => Promise<void>}}
 */
function httpLoad(url, { path: route = "/experts/vader", concurrency = 16, text = "What a lovely, happy day!" } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const body = JSON.stringify({ text });
  const results = [];
  let running = true;
  const once = () => new Promise((resolve) => {
    const start = Date.now();
    const req = http.request(`${url}${route}`, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      let raw = "";
      res.on("data", (c) => (raw += c));
      res.on("end", () => {
        let name;
        try {
          name = JSON.parse(raw).error?.name;
        } catch {
          name = "(not JSON)";
        }
        resolve({ status: res.statusCode, name, start, end: Date.now() });
      });
    });
    req.on("error", (err) => resolve({ status: 0, name: err.code, start, end: Date.now() }));
    req.end(body);
  });
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      const r = await once();
      results.push(r);
      if (r.status !== 200) await sleep(20);
    }
  });
  return {
    results,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      agent.destroy();
    },
  };
}

/** The answers that were not 200, counted by "status name". */
function failures(results) {
  const counts = {};
  for (const r of results) if (r.status !== 200) counts[`${r.status} ${r.name}`] = (counts[`${r.status} ${r.name}`] || 0) + 1;
  return counts;
}

module.exports = { writeVaderConfig, tempDir, waitFor, startWorkers, workerPids, callOnce, startBridgeApp, httpLoad, failures };
