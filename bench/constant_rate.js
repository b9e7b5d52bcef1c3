"use strict";
/**
 * Open-loop, constant-rate HTTP load for bench/overload.py (node:net only).
 *
 *   node bench/constant_rate.js URL RATE SECONDS BODIES_FILE [CONNECTIONS]
 *
 * The model is wrk2's: a FIXED pool of CONNECTIONS (default 256) keep-alive
 * connections, all opened before the clock starts; request i is due at
 * start + i / RATE whether or not earlier ones were answered (open loop);
 * a due request goes out on the first idle connection, or waits in the
 * generator for one; its latency is measured from when it was DUE, so time
 * spent waiting in the generator or in the server's socket counts (no
 * "coordinated omission"). No connection is opened during the run unless the
 * server closes one (counted as `reconnects`).
 *
 * HTTP/1.1 is written and parsed here, without node:http's client: on the 2
 * cores the generator shares with the servers, its own cost per request must
 * stay small (node:http's client costs about as much as the server it loads).
 * Responses must carry Content-Length or be chunked.
 *
 * Why not autocannon's rate mode: its client resets a per-connection quota
 * every second, so each second starts with a burst (not a constant rate);
 * wrk2 and vegeta are not packaged for Debian bookworm.
 *
 * Prints one line: BENCH_JSON {...} with, per status, the count and latency
 * percentiles (ms), the error names of the non-200 answers, the offered and
 * achieved rate, transport errors and the generator's own queue peak.
 */

const net = require("node:net");
const fs = require("node:fs");

const REQUEST_TIMEOUT_MS = 30000;

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

/**
 * Parses HTTP/1.1 responses from a byte stream; calls `onResponse(status, body|null, close)`
 * for each (the body only for non-200 answers, where the error name is wanted).
 */
class ResponseParser {
  constructor(onResponse) {
    this.onResponse = onResponse;
    this.buf = Buffer.alloc(0);
    this.head = null; // {status, length, chunked, close}
  }

  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (!this.head) {
        const end = this.buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const lines = this.buf.toString("latin1", 0, end).split("\r\n");
        const status = Number(lines[0].split(" ")[1]);
        let length = 0;
        let chunked = false;
        let close = false;
        for (let i = 1; i < lines.length; i++) {
          const colon = lines[i].indexOf(":");
          const key = lines[i].slice(0, colon).trim().toLowerCase();
          const value = lines[i].slice(colon + 1).trim().toLowerCase();
          if (key === "content-length") length = Number(value);
          else if (key === "transfer-encoding" && value.includes("chunked")) chunked = true;
          else if (key === "connection" && value === "close") close = true;
        }
        this.head = { status, length, chunked, close };
        this.buf = this.buf.subarray(end + 4);
      }
      const body = this.head.chunked ? this.chunkedBody() : this.fixedBody();
      if (body === undefined) return;
      const { status, close } = this.head;
      this.head = null;
      this.onResponse(status, body, close);
    }
  }

  fixedBody() {
    if (this.buf.length < this.head.length) return undefined;
    const body = this.buf.subarray(0, this.head.length);
    this.buf = this.buf.subarray(this.head.length);
    return body;
  }

  chunkedBody() {
    const parts = [];
    let at = 0;
    for (;;) {
      const eol = this.buf.indexOf("\r\n", at);
      if (eol < 0) return undefined;
      const size = parseInt(this.buf.toString("latin1", at, eol), 16);
      if (this.buf.length < eol + 2 + size + 2) return undefined;
      if (size === 0) {
        this.buf = this.buf.subarray(eol + 4);
        return Buffer.concat(parts);
      }
      parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
  }
}

async function main() {
  const [url, rateArg, secondsArg, bodiesFile, connectionsArg] = process.argv.slice(2);
  const rate = Number(rateArg);
  const seconds = Number(secondsArg);
  const connections = Number(connectionsArg || 256);
  if (!url || !(rate > 0) || !(seconds > 0) || !bodiesFile || !(connections >= 1)) {
    process.stderr.write("usage: node bench/constant_rate.js URL RATE SECONDS BODIES_FILE [CONNECTIONS]\n");
    process.exit(2);
  }
  const target = new URL(url);
  const port = Number(target.port || 80);
  const requests = fs.readFileSync(bodiesFile, "utf8").split("\n").filter(Boolean).map((text) => {
    const body = Buffer.from(text);
    const head = `POST ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    return Buffer.concat([Buffer.from(head, "latin1"), body]);
  });
  const total = Math.round(rate * seconds);
  const byStatus = new Map();
  const errorNames = {};
  let errors = 0;
  let finished = 0;
  let reconnects = 0;
  let inFlight = 0;
  let peakInFlight = 0;
  let peakWaiting = 0;
  let start = 0;
  const dueAt = (i) => start + (i * 1000) / rate;
  /** Due requests that wait for an idle connection (a FIFO of indices). */
  const waiting = [];
  let waitingHead = 0;
  const idle = [];

  const record = (i, status, body) => {
    inFlight -= 1;
    finished += 1;
    const latency = performance.now() - dueAt(i);
    if (status === 0) {
      errors += 1;
      return;
    }
    if (!byStatus.has(status)) byStatus.set(status, []);
    byStatus.get(status).push(latency);
    if (status !== 200) {
      let name = "(not JSON)";
      try {
        name = JSON.parse(body.toString("utf8")).error.name;
      } catch {
        /* keep the placeholder */
      }
      const key = `${status} ${name}`;
      errorNames[key] = (errorNames[key] || 0) + 1;
    }
  };

  const openConnection = () => new Promise((resolve) => {
    const conn = { socket: null, current: -1, sentAt: 0, dead: false };
    const socket = net.connect({ host: target.hostname, port, noDelay: true });
    conn.socket = socket;
    const parser = new ResponseParser((status, body, close) => {
      const i = conn.current;
      conn.current = -1;
      if (i >= 0) record(i, status, body);
      if (close) retire(conn);
      else release(conn);
    });
    socket.on("connect", () => resolve(conn));
    socket.on("data", (chunk) => parser.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      if (conn.current >= 0) {
        const i = conn.current;
        conn.current = -1;
        record(i, 0);
      }
      resolve(conn);
      retire(conn);
    });
  });

  /** A connection the server closed (or that failed) is replaced, and counted. */
  const retire = (conn) => {
    if (conn.dead) return;
    conn.dead = true;
    conn.socket.destroy();
    if (start === 0) return;
    reconnects += 1;
    openConnection().then((c) => {
      if (!c.dead) release(c);
    });
  };

  const send = (conn, i) => {
    conn.current = i;
    conn.sentAt = performance.now();
    inFlight += 1;
    peakInFlight = Math.max(peakInFlight, inFlight);
    conn.socket.write(requests[i % requests.length]);
  };

  const release = (conn) => {
    if (conn.dead) return;
    if (waitingHead < waiting.length) {
      send(conn, waiting[waitingHead++]);
      if (waitingHead > 4096 && waitingHead * 2 > waiting.length) {
        waiting.splice(0, waitingHead);
        waitingHead = 0;
      }
    } else {
      idle.push(conn);
    }
  };

  const pool = await Promise.all(Array.from({ length: connections }, openConnection));
  start = performance.now();
  for (const conn of pool) if (!conn.dead) idle.push(conn);

  // A request in flight longer than REQUEST_TIMEOUT_MS is a transport error (its connection is replaced).
  const reaper = setInterval(() => {
    const now = performance.now();
    for (const conn of pool) if (conn.current >= 0 && now - conn.sentAt > REQUEST_TIMEOUT_MS) retire(conn);
  }, 1000);

  // Issue every request that is due, then sleep until the next one (1 ms timer granularity).
  let next = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total && dueAt(next) <= now) {
        const conn = idle.pop();
        if (conn) send(conn, next);
        else {
          waiting.push(next);
          peakWaiting = Math.max(peakWaiting, waiting.length - waitingHead);
        }
        next += 1;
      }
      if (next < total) setTimeout(tick, Math.max(0, dueAt(next) - performance.now()));
      else resolve();
    };
    tick();
  });
  const sentFor = (performance.now() - start) / 1000;
  const deadline = Date.now() + REQUEST_TIMEOUT_MS + 5000;
  while (finished < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const elapsed = (performance.now() - start) / 1000;
  clearInterval(reaper);
  const statuses = {};
  for (const [status, latencies] of [...byStatus.entries()].sort((a, b) => a[0] - b[0])) statuses[status] = summary(latencies);
  const all = summary([...byStatus.values()].flat());
  process.stdout.write(`BENCH_JSON ${JSON.stringify({
    url, rate, seconds, connections, requests: total, finished, errors, unanswered: total - finished, reconnects,
    offered_rps: total / sentFor, elapsed_s: elapsed, peak_in_flight: peakInFlight, peak_waiting: peakWaiting,
    statuses, all, error_names: errorNames,
  })}\n`);
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`constant_rate: ${err.stack || err}\n`);
  process.exit(1);
});
