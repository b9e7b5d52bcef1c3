"use strict";
/**
 * The bridge's connection pool (src/pool.js) against a real
 * `expertd serve --workers 2` (vader, no TensorFlow), through real HTTP:
 *   - calls at concurrency reach both workers (counted by each worker's own
 *     stats()), and a call goes to the least busy worker; a question for
 *     every worker (the call view's traces()) reaches each once;
 *   - `kill -9` of a worker under load: every request is answered 200 (the
 *     lost calls are asked again on another connection), and the pool
 *     replaces the lost connections;
 *   - SIGHUP with a changed model under load: no non-2xx answer, and then
 *     every worker, and every connection of the pool, serves the new version;
 *   - against one single-process server, and one that says it has 1 worker,
 *     the pool never redials: all its connections reach the one process.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { sleep, startExpertd } = require("./helpers");
const { METHOD } = require("../src/spec");
const { writeVaderConfig, tempDir, waitFor, startWorkers, workerPids, callOnce, startBridgeApp, httpLoad, failures } = require("./pool_helpers");

/** The pool's connections, once every one of them knows its worker. */
function knownPool(rpc) {
  const snapshot = rpc.pool.snapshot();
  return snapshot.length === rpc.pool.size && snapshot.every((c) => c.pid !== null) ? snapshot : null;
}

/** The pool's connections, once they know their workers and reach `workers` different ones. */
function poolReaching(rpc, workers) {
  const p = knownPool(rpc);
  return p && new Set(p.map((c) => c.pid)).size === workers ? p : null;
}

describe("the bridge's pool over expertd serve --workers 2", { timeout: 300000 }, () => {
  let server;
  let dir;
  const bridges = [];

  before(async () => {
    dir = tempDir();
    const config = writeVaderConfig(dir, "1", "  slow:\n    expert: expertd.experts.examples:SlowExpert\n    options: {seconds: 2}\n");
    server = await startWorkers({ config, workers: 2 });
  });

  after(async () => {
    for (const b of bridges) await b.close();
    if (server) await server.stop();
  });

  async function bridge(options = {}) {
    const b = await startBridgeApp({ endpoint: server.endpoint, ...options });
    bridges.push(b);
    return b;
  }

  it("spreads calls at concurrency over both workers (each worker's own stats() counts them)", async (t) => {
    const b = await bridge();
    // Redials at start, then the spreading ones: the pool reaches both workers (almost always at once).
    const pool = await waitFor(() => poolReaching(b.rpc, 2), 60000, "the pool to reach both workers");
    const before = await statsByWorker(server.endpoint);
    const load = httpLoad(b.url, { concurrency: 32 });
    await waitFor(() => load.results.length >= 400, 60000, "400 answers");
    await load.stop();
    assert.deepEqual(failures(load.results), {});
    const afterwards = await statsByWorker(server.endpoint);
    const served = [...afterwards].map(([pid, calls]) => calls - (before.get(pid) || 0));
    t.diagnostic(`pool peers ${JSON.stringify(pool.map((c) => c.pid))}; vader calls per worker during the load: ${JSON.stringify(served)}`);
    assert.ok(served.length === 2 && served.every((n) => n > 0), `calls per worker: ${JSON.stringify(served)}`);
  });

  it("sends a call to the least busy worker: while one worker runs a slow call, the quick ones go to the other", async () => {
    const b = await bridge({ coalesce: { maxBatch: 1 } });
    await waitFor(() => poolReaching(b.rpc, 2), 60000, "the pool to reach both workers");
    const slow = b.rpc.opinion("slow", { text: "busy" });
    const busy = await waitFor(() => b.rpc.pool.snapshot().find((c) => c.inFlight > 0), 5000, "the slow call in flight");
    const callsOnBusyWorker = () => b.rpc.pool.snapshot().filter((c) => c.pid === busy.pid).reduce((n, c) => n + c.calls, 0);
    const before = callsOnBusyWorker();
    for (let i = 0; i < 20; i++) {
      const answer = await b.rpc.opinion("vader", { text: `quick ${i}, good` });
      assert.equal(answer.label, "positive");
    }
    assert.equal(callsOnBusyWorker(), before, "a quick call went to the worker busy with the slow one");
    assert.deepEqual(await slow, { slept: 2 });
  });

  it("asks each worker its connections reach once (callEachPeer: how the call view gathers every worker's ring of traces)", async () => {
    const b = await bridge();
    const pool = await waitFor(() => poolReaching(b.rpc, 2), 60000, "the pool to reach both workers");
    const answers = await b.rpc.callEachPeer(METHOD.health);
    assert.deepEqual(answers.map((h) => h.pid).sort(), [...new Set(pool.map((c) => c.pid))].sort());
  });

  it("kill -9 of a worker under load: every request answered 200, the lost connections replaced", async (t) => {
    // Coalescing off: each request is its own call, so the load has calls in flight on both workers.
    // A lost connection's call is asked again once a probe finds the server answering: on a loaded
    // test machine the surviving worker may take over the default 1 s to answer it (then 503).
    const b = await bridge({ coalesce: { maxBatch: 1 }, probeTimeoutMs: 5000 });
    await waitFor(() => poolReaching(b.rpc, 2), 60000, "the pool to reach both workers");
    // The victim: the worker running a slow call (so a call is surely in flight on it at the kill).
    const slow = fetch(`${b.url}/experts/slow`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"text": "slow"}' });
    const victim = await waitFor(() => b.rpc.pool.snapshot().find((c) => c.inFlight > 0 && c.pid), 5000, "the slow call in flight");
    const load = httpLoad(b.url, { concurrency: 16 });
    await waitFor(() => load.results.length >= 100, 60000, "100 answers before the kill");
    const dialledBefore = b.rpc.pool.dialled;
    const retries = [];
    b.rpc.on("retry", (method, name) => retries.push(name));
    process.kill(victim.pid, "SIGKILL");
    const killedAt = load.results.length;
    await waitFor(() => /exited with status -9.*restarting/.test(server.output()), 30000, "the supervisor to see the kill");
    await waitFor(() => load.results.length >= killedAt + 300, 60000, "300 answers after the kill");
    await load.stop();
    const pool = await waitFor(() => knownPool(b.rpc), 20000, "the refilled pool");
    t.diagnostic(`${load.results.length} answers, ${retries.length} calls asked again (${[...new Set(retries)]}), ` +
      `${b.rpc.pool.dialled - dialledBefore} connections dialled after the kill; pool peers now ${JSON.stringify(pool.map((c) => c.pid))}`);
    assert.deepEqual(failures(load.results), {});
    assert.equal((await slow).status, 200, "the slow call lost with its worker was not asked again");
    assert.ok(retries.length > 0, "no call was asked again");
    assert.ok(pool.every((c) => c.pid !== victim.pid), "the pool still holds a connection to the killed worker");
    assert.ok(b.rpc.pool.dialled > dialledBefore, "no connection was replaced");
    // The supervisor restarts the worker; the pool's spreading redials find it.
    const spread = await waitFor(() => poolReaching(b.rpc, 2), 90000, "the pool to reach the restarted worker");
    t.diagnostic(`then the pool reached the restarted worker: ${JSON.stringify(spread.map((c) => c.pid))}`);
  });
});

describe("SIGHUP with a changed model under bridge load", { timeout: 300000 }, () => {
  it("answers every request 2xx during the reload; then every worker and every pooled connection serve the new version", async (t) => {
    const dir = tempDir();
    const config = writeVaderConfig(dir, "1");
    const server = await startWorkers({ config, workers: 2 });
    let b;
    let load;
    try {
      const old = await workerPids(server.endpoint, 2);
      assert.equal(old.size, 2);
      b = await startBridgeApp({ endpoint: server.endpoint });
      await waitFor(() => knownPool(b.rpc), 20000, "every pooled connection to know its worker");
      load = httpLoad(b.url, { concurrency: 16 });
      await waitFor(() => load.results.length >= 200, 60000, "answers before the reload");
      writeVaderConfig(dir, "2");
      process.kill(server.pid, "SIGHUP");
      await waitFor(() => /reload done|reload stopped|reload refused/.test(server.output()), 120000, "the reload to end");
      assert.match(server.output(), /reload done/);
      const atDone = load.results.length;
      await waitFor(() => load.results.length >= atDone + 300, 60000, "answers after the reload");
      // Old connections end when their workers exit; by now the pool has only new ones.
      const pool = await waitFor(() => {
        const p = knownPool(b.rpc);
        return p && p.every((c) => !old.has(c.pid)) ? p : null;
      }, 30000, "the pool to move to the new workers");
      await load.stop();
      const fresh = await workerPids(server.endpoint, 2);
      t.diagnostic(`${load.results.length} answers; pool peers ${JSON.stringify(pool.map((c) => [c.pid, c.versions]))}; ` +
        `workers now ${JSON.stringify([...fresh].map(([pid, h]) => [pid, h.versions]))}`);
      assert.deepEqual(failures(load.results), {});
      assert.equal(fresh.size, 2);
      for (const [pid, health] of fresh) {
        assert.ok(!old.has(pid), `old worker ${pid} still answers`);
        assert.deepEqual(health.versions, { vader: "2" });
      }
      for (const c of pool) assert.deepEqual(c.versions, { vader: "2" });
      // Connections made during the reload all went to the newest worker (it steers the port to itself): the spreading redials reach the other.
      const spread = await waitFor(() => poolReaching(b.rpc, 2), 90000, "the pool to reach both new workers");
      assert.ok(spread.every((c) => fresh.has(c.pid)), JSON.stringify(spread));
      t.diagnostic(`then the pool reached both new workers: ${JSON.stringify(spread.map((c) => c.pid))}`);
      const experts = await (await fetch(`${b.url}/experts`)).json();
      assert.equal(experts.find((e) => e.name === "vader").version, "2");
    } finally {
      if (load) await load.stop();
      if (b) await b.close();
      await server.stop();
    }
  });
});

/** `{pid: vader calls}` of each worker, from its own stats() on a fresh connection. */
async function statsByWorker(endpoint) {
  const byPid = new Map();
  for (let i = 0; i < 200 && byPid.size < 2; i++) {
    const r = await callOnce(endpoint, "stats");
    if (r) byPid.set(r.health.pid, r.answer.experts.vader.calls);
    await sleep(5);
  }
  return byPid;
}

describe("the pool against a server with one process", { timeout: 300000 }, () => {
  for (const [label, workers] of [["a single-process server", null], ["expertd serve --workers 1", 1]]) {
    it(`never redials against ${label}: every connection stays on its one process`, async () => {
      const dir = tempDir();
      const config = writeVaderConfig(dir, "1");
      const server = workers ? await startWorkers({ config, workers }) : await startExpertd({ config });
      const b = await startBridgeApp({ endpoint: server.endpoint });
      try {
        const pool = await waitFor(() => knownPool(b.rpc), 60000, "every connection to know its process");
        assert.equal(new Set(pool.map((c) => c.pid)).size, 1);
        const load = httpLoad(b.url, { concurrency: 16 });
        await waitFor(() => load.results.length >= 200, 60000, "200 answers");
        await sleep(2500); // past the first spreading redial (1 s), had there been one to make
        await load.stop();
        assert.deepEqual(failures(load.results), {});
        assert.equal(b.rpc.pool.dialled, b.rpc.pool.size, "connections made beyond the pool's size");
      } finally {
        await b.close();
        await server.stop();
      }
    });
  }
});
