"use strict";
/**
 * Open-loop, constant-rate HTTP load for bench/overload.py (node:http only).
 *
 *   node bench/constant_rate.js URL RATE SECONDS BODIES_FILE [CONNECTIONS]
 *
 * Request i is due at start + i / RATE, whether or not earlier ones were
 * answered (open loop, as wrk2 and vegeta do); its latency is measured from
 * when it was DUE, not from when a free connection took it, so a server that
 * falls behind is charged for the queue it causes (no "coordinated
 * omission"). At most CONNECTIONS (default 512) requests are in flight over
 * keep-alive connections; requests beyond wait for one, and that wait counts.
 * Requests cycle through the bodies in BODIES_FILE (one JSON body per line).
 *
 * Why not autocannon's rate mode: its httpClient resets a per-connection quota
 * every second, so each second starts with a burst (not a constant rate).
 *
 * Prints one line: BENCH_JSON {...} with, per status, the count and latency
 * percentiles (ms), the error names of the non-200 answers, the offered and
 * achieved rate, and transport errors.
 */

const http = require("node:http");
const fs = require("node:fs");

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function summary(latencies) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    count: sorted.length,
    p50_ms: percentile(sorted, 50),
    p90_ms: percentile(sorted, 90),
    p99_ms: percentile(sorted, 99),
    max_ms: sorted.length ? sorted[sorted.length - 1] : null,
  };
}

async function main() {
  const [url, rateArg, secondsArg, bodiesFile, connectionsArg] = process.argv.slice(2);
  const rate = Number(rateArg);
  const seconds = Number(secondsArg);
  const connections = Number(connectionsArg || 512);
  if (!url || !(rate > 0) || !(seconds > 0) || !bodiesFile) {
    process.stderr.write("usage: node bench/constant_rate.js URL RATE SECONDS BODIES_FILE [CONNECTIONS]\n");
    process.exit(2);
  }
  const bodies = fs.readFileSync(bodiesFile, "utf8").split("\n").filter(Boolean).map((b) => Buffer.from(b));
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const target = new URL(url);
  const total = Math.round(rate * seconds);
  const byStatus = new Map();
  const errorNames = {};
  let errors = 0;
  let finished = 0;
  let inFlight = 0;
  let peakInFlight = 0;
  const start = performance.now();

  const fire = (i) => {
    const due = start + (i * 1000) / rate;
    const body = bodies[i % bodies.length];
    inFlight += 1;
    peakInFlight = Math.max(peakInFlight, inFlight);
    const done = (status, errorName) => {
      if (errorName) errorNames[errorName] = (errorNames[errorName] || 0) + 1;
      inFlight -= 1;
      finished += 1;
      const latency = performance.now() - due;
      if (status === 0) errors += 1;
      else {
        if (!byStatus.has(status)) byStatus.set(status, []);
        byStatus.get(status).push(latency);
      }
    };
    const req = http.request({
      agent, hostname: target.hostname, port: target.port, path: target.pathname + target.search, method: "POST",
      headers: { "content-type": "application/json", "content-length": body.length },
    }, (res) => {
      if (res.statusCode === 200) {
        res.resume();
        res.on("end", () => done(res.statusCode));
        return;
      }
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        let name = "(not JSON)";
        try {
          name = JSON.parse(text).error.name;
        } catch {
          /* keep the placeholder */
        }
        done(res.statusCode, `${res.statusCode} ${name}`);
      });
    });
    req.setTimeout(30000, () => req.destroy(new Error("timeout")));
    req.on("error", () => done(0));
    req.end(body);
  };

  // Issue every request that is due, then sleep until the next one (1 ms timer granularity).
  let next = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total && start + (next * 1000) / rate <= now) fire(next++);
      if (next < total) setTimeout(tick, Math.max(0, start + (next * 1000) / rate - performance.now()));
      else resolve();
    };
    tick();
  });
  const sentFor = (performance.now() - start) / 1000;
  const deadline = Date.now() + 35000;
  while (finished < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const elapsed = (performance.now() - start) / 1000;
  const statuses = {};
  for (const [status, latencies] of [...byStatus.entries()].sort((a, b) => a[0] - b[0])) statuses[status] = summary(latencies);
  const all = summary([...byStatus.values()].flat());
  agent.destroy();
  process.stdout.write(`BENCH_JSON ${JSON.stringify({
    url, rate, seconds, connections, requests: total, finished, errors, unanswered: total - finished,
    offered_rps: total / sentFor, elapsed_s: elapsed, peak_in_flight: peakInFlight, statuses, all, error_names: errorNames,
  })}\n`);
}

main().catch((err) => {
  process.stderr.write(`constant_rate: ${err.stack || err}\n`);
  process.exit(1);
});
