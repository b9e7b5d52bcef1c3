"use strict";
/**
 * Load shedding before Express (src/admission.js), as a real bridge process
 * in front of a real expertd over real HTTP: a burst beyond the limit on
 * requests in flight is answered 503 Overloaded (with Retry-After) at once
 * for the excess and 200 for the rest, the shed requests never reach the
 * server (its counting expert says how many inputs it computed), /healthz is
 * never shed, and the next request after the burst is admitted again. A
 * bridge starved of CPU (stopped and continued by signals, as on an
 * overloaded machine) sheds new work for its lagging event loop, not its
 * pages, and admits again once it runs.
 */

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const path = require("node:path");
const { startExpertd, startBridge } = require("./helpers");
const { CATALOGUE } = require("../src/errors");

const LIMIT = 4;
const BURST = 12;
const STREAMS = LIMIT + 2; // more streams than requests may be in flight
/** ADMIT_MAX_LAG_MS of the starved bridge, and how long it is starved. */
const MAX_LAG_MS = 100;
const STARVED_MS = 3000;
/** Each round of the starvation: stopped this long (well over MAX_LAG_MS), then running this long. */
const STOPPED_MS = 250;
const RUNNING_MS = 20;

/** Start an NDJSON upload that sends one line and then nothing (a slow client); its request. */
function slowStream(base) {
  const { hostname, port } = new URL(base);
  const req = http.request({ hostname, port, method: "POST", path: "/experts/counting/stream", headers: { "content-type": "application/x-ndjson" } });
  req.on("error", () => {});
  req.write(`${JSON.stringify({ text: "slow" })}\n`);
  return req;
}

/** A gauge's value from the bridge's /metrics. */
async function gauge(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const found = text.match(new RegExp(`^${name} (\\d+)$`, "m"));
  return found ? Number(found[1]) : null;
}

async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/**
 * A real expertd serving shed_experts.yaml and a bridge process in front of it with
 * these admission settings (`ADMIT_*` and the like); `base` is the bridge's URL.
 * @param {Record<string, string>} admission
 */
async function startPair(admission) {
  const expertd = await startExpertd({ config: path.join(__dirname, "shed_experts.yaml") });
  const bridge = startBridge({ HOST: "127.0.0.1", PORT: "0", EXPERTD_ENDPOINT: expertd.endpoint, RPC_TIMEOUT: "30", ...admission });
  return { expertd, bridge, base: await bridge.ready };
}

/** Stop what `startPair` started (a bridge left stopped by a signal is continued first). */
async function stopPair(pair) {
  if (!pair) return;
  if (pair.bridge.proc.exitCode === null) {
    pair.bridge.proc.kill("SIGCONT");
    pair.bridge.proc.kill("SIGKILL");
  }
  await pair.expertd.stop();
}

describe("bridge process: shedding beyond ADMIT_MAX_IN_FLIGHT", { timeout: 180000 }, () => {
  let pair;
  let base;

  before(async () => {
    pair = await startPair({
      ADMIT_MAX_IN_FLIGHT: String(LIMIT),
      ADMIT_MAX_STREAMS: String(STREAMS),
      ADMIT_ADAPTIVE: "false", // a fixed limit: the test counts
      ADMIT_MAX_LAG_MS: "0", // a slow machine's lag must not shed the admitted ones
    });
    base = pair.base;
  });

  after(() => stopPair(pair));

  it("a burst: the excess is 503 Overloaded at once, the rest 200, the shed never reach the server; then it recovers", async () => {
    const order = [];
    const burst = Array.from({ length: BURST }, (_, i) => post(`${base}/experts/counting`, { text: `burst ${i}` }).then((res) => {
      order.push(res.status);
      return res;
    }));
    // While the admitted requests are in flight (the expert sleeps 3 s), the
    // excess has been answered and the health check is never shed.
    const overloaded = CATALOGUE.Overloaded.status;
    while (order.filter((s) => s === overloaded).length < BURST - LIMIT && order.length < BURST) await new Promise((r) => setTimeout(r, 10));
    // Nor is a GET (the page, its document): they bring no work for the experts.
    for (const path of ["/healthz", "/openapi.json", "/"]) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 200, `GET ${path} during the burst`);
      await res.arrayBuffer();
    }
    const answers = await Promise.all(burst);

    const ok = answers.filter((r) => r.status === 200);
    const shed = answers.filter((r) => r.status !== 200);
    assert.equal(ok.length, LIMIT, JSON.stringify(answers.map((r) => r.status)));
    assert.equal(shed.length, BURST - LIMIT);
    for (const r of shed) {
      assert.equal(r.status, overloaded);
      assert.equal(r.body.error.name, "Overloaded");
      assert.equal(r.body.error.status, overloaded);
      assert.match(r.body.error.message, /retry/);
      assert.match(r.headers.get("retry-after") || "", /^\d+$/);
    }
    // At once: every shed answer came before the first 200 (which waits for the expert's 3 s).
    assert.deepEqual(order.slice(0, BURST - LIMIT), Array(BURST - LIMIT).fill(overloaded));

    // The shed requests never reached the server: it computed exactly the admitted ones...
    assert.equal(Math.max(...ok.map((r) => r.body.computed)), LIMIT);
    // ... and the bridge is back to admitting as soon as the burst is over.
    const next = await post(`${base}/experts/counting`, { text: "after the burst" });
    assert.equal(next.status, 200, JSON.stringify(next.body));
    assert.equal(next.body.computed, LIMIT + 1);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, new RegExp(`^expertd_bridge_shed_total\\{reason="in_flight"\\} ${BURST - LIMIT}$`, "m"));
  });

  it("slow NDJSON streams are counted apart: they never take the places of single requests; one beyond ADMIT_MAX_STREAMS is 503", async () => {
    const answered = []; // a stream that is refused is answered at once; an admitted one only at its end
    const uploads = Array.from({ length: STREAMS }, () => slowStream(base).on("response", (res) => {
      answered.push(res.statusCode);
      res.resume();
    }));
    try {
      // Admitted streams are not answered until they end; a refused one is answered at once.
      const admittedBy = Date.now() + 20000;
      while (answered.length === 0 && (await gauge(base, "expertd_bridge_admission_streams")) !== STREAMS) {
        assert.ok(Date.now() < admittedBy, "the streams were neither admitted nor refused");
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(answered, [], "every stream is admitted");
      // More streams than ADMIT_MAX_IN_FLIGHT are open, and a single request still gets in.
      const single = await post(`${base}/experts/counting`, { text: "beside the streams" });
      assert.equal(single.status, 200, JSON.stringify(single.body));
      // One stream more than ADMIT_MAX_STREAMS is refused at once.
      const extra = await fetch(`${base}/experts/counting/stream`, { method: "POST", headers: { "content-type": "application/x-ndjson" }, body: `${JSON.stringify({ text: "one too many" })}\n` });
      assert.equal(extra.status, CATALOGUE.Overloaded.status);
      assert.equal((await extra.json()).error.name, "Overloaded");
      assert.match(extra.headers.get("retry-after") || "", /^\d+$/);
    } finally {
      for (const req of uploads) req.destroy();
    }
    // A stream whose client went away gives its place back.
    const deadline = Date.now() + 20000;
    while ((await gauge(base, "expertd_bridge_admission_streams")) !== 0) {
      assert.ok(Date.now() < deadline, "the streams' places were not given back");
      await new Promise((r) => setTimeout(r, 50));
    }
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^expertd_bridge_shed_total\{reason="streams"\} 1$/m);
  });
});

/**
 * Starve `proc` of CPU for `ms`: SIGSTOP it for STOPPED_MS, SIGCONT it for
 * RUNNING_MS, round after round, as a process on an overloaded machine runs;
 * it is left running. Should this test process end meanwhile (its runner's
 * SIGTERM, Ctrl-C), the stopped bridge is continued and killed first: a
 * stopped process keeps a SIGTERM pending for good.
 */
async function starve(proc, ms) {
  const release = () => {
    try {
      proc.kill("SIGCONT");
      proc.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  const onSignal = (signal) => {
    release();
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("exit", release);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const until = Date.now() + ms;
  try {
    while (Date.now() < until) {
      proc.kill("SIGSTOP");
      await new Promise((r) => setTimeout(r, STOPPED_MS));
      proc.kill("SIGCONT");
      await new Promise((r) => setTimeout(r, RUNNING_MS));
    }
  } finally {
    proc.kill("SIGCONT");
    process.removeListener("exit", release);
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

/** POST `body` to `url` until it is not shed (503 Overloaded) or 10 s have passed; the answer and how many were shed. */
async function postUntilAdmitted(url, body) {
  const deadline = Date.now() + 10000;
  for (let shed = 0; ; shed += 1) {
    const answer = await post(url, body);
    if (answer.status !== CATALOGUE.Overloaded.status || Date.now() > deadline) return { answer, shed };
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("bridge process: shedding while its event loop lags (ADMIT_MAX_LAG_MS)", { timeout: 120000 }, () => {
  let pair;
  let base;

  before(async () => {
    pair = await startPair({
      ADMIT_MAX_IN_FLIGHT: "1000", // only the loop's lag sheds here
      ADMIT_ADAPTIVE: "false",
      ADMIT_MAX_LAG_MS: String(MAX_LAG_MS),
      RPC_PROBE_TIMEOUT: "10", // GET /healthz asks expertd; a starved bridge reads its answer late
    });
    base = pair.base;
  });

  after(() => stopPair(pair));

  it("a starved bridge answers new work 503 Overloaded (event loop) and its pages 200; shed work never reaches the server; it admits again once it runs", async (t) => {
    // A busy test machine can make the loop lag before the test starves it: those are shed too.
    const { answer: first, shed: shedBefore } = await postUntilAdmitted(`${base}/experts/quick`, { text: "before" });
    assert.equal(first.status, 200, JSON.stringify(first.body));

    const starving = starve(pair.bridge.proc, STARVED_MS);
    const posts = [];
    const pages = [];
    const sendUntil = Date.now() + STARVED_MS - 500;
    for (let i = 0; Date.now() < sendUntil; i += 1) {
      posts.push(post(`${base}/experts/quick`, { text: `starved ${i}` }));
      if (i % 4 === 0) pages.push(fetch(`${base}/healthz`).then(async (res) => (await res.arrayBuffer(), res.status)));
      await new Promise((r) => setTimeout(r, 50));
    }
    await starving;
    const answers = await Promise.all(posts);
    const statuses = await Promise.all(pages);

    const overloaded = CATALOGUE.Overloaded.status;
    const shed = answers.filter((r) => r.status === overloaded);
    const ok = answers.filter((r) => r.status === 200);
    // Nothing else: each request is answered, either way.
    assert.equal(shed.length + ok.length, answers.length, JSON.stringify(answers.map((r) => r.status)));
    t.diagnostic(`starved for ${STARVED_MS} ms: ${shed.length} requests shed, ${ok.length} admitted`);
    assert.ok(shed.length > 0, `a starved bridge shed nothing: ${JSON.stringify(answers.map((r) => r.status))}`);
    for (const r of shed) {
      assert.equal(r.body.error.name, "Overloaded");
      assert.match(r.body.error.message, new RegExp(`event loop lags more than ${MAX_LAG_MS} ms.*retry`));
      assert.match(r.headers.get("retry-after") || "", /^\d+$/);
    }
    assert.deepEqual(statuses, statuses.map(() => 200), "GET /healthz is never shed");

    // Running again, it admits again (once its last stall is out of the sample) ...
    const { answer: next, shed: shedAfter } = await postUntilAdmitted(`${base}/experts/quick`, { text: "after" });
    assert.equal(next.status, 200, JSON.stringify(next.body));
    // ... and the shed requests never reached the server: it computed the first, the admitted and this one.
    assert.equal(next.body.computed, 1 + ok.length + 1);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    const counted = metrics.match(/^expertd_bridge_shed_total\{reason="event_loop"\} (\d+)$/m);
    assert.ok(counted, "no event_loop shed counter in /metrics");
    assert.equal(Number(counted[1]), shedBefore + shed.length + shedAfter);
  });
});
