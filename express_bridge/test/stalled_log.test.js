"use strict";
/**
 * A log reader that stops reading never stops the bridge: `node src/server.js`
 * with its stdout a pipe nobody reads (it fills after a few hundred request
 * lines) still answers every request, and SIGTERM still ends it. With pino's
 * default synchronous destination every log line then slept 100 ms on the
 * event loop, and after SIGTERM the process never exited.
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const path = require("node:path");
const { freePort, sleep } = require("./helpers");

const REQUESTS = 600; // ~300 bytes of log each: several times the pipe and the stream buffers

describe("bridge process with a stalled stdout reader", { timeout: 180000 }, () => {
  it("answers every request and exits on SIGTERM", async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ["src/server.js"], {
      cwd: path.join(__dirname, ".."),
      env: { PATH: process.env.PATH, HOST: "127.0.0.1", PORT: String(port), EXPERTD_ENDPOINT: `tcp://127.0.0.1:${await freePort()}` },
      stdio: ["ignore", "pipe", "ignore"],
    });
    child.stdout.pause(); // nobody reads: the pipe fills
    const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    try {
      const base = `http://127.0.0.1:${port}`;
      for (let i = 0; ; i++) {
        try {
          await (await fetch(`${base}/healthz`)).arrayBuffer();
          break;
        } catch (err) {
          if (i > 300) throw err;
          await sleep(100);
        }
      }
      let answered = 0;
      for (let i = 0; i < REQUESTS; i++) {
        const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(10000) });
        await res.arrayBuffer();
        answered += res.status === 503 || res.status === 200;
      }
      assert.equal(answered, REQUESTS);
      child.kill("SIGTERM");
      const outcome = await Promise.race([exited, sleep(30000).then(() => null)]);
      assert.ok(outcome, "the bridge did not exit within 30 s of SIGTERM");
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });
});
