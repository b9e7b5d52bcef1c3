"use strict";
/**
 * The coalescing policy (src/coalescer.js) on its own, with a fake RPC call
 * that behaves like expertd's `opinion` and `opinions_batch` (the real server
 * is exercised in coalesce.test.js).
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { Coalescer } = require("../src/coalescer");
const { RemoteError, RpcTimeoutError, HttpError, CATALOGUE } = require("../src/errors");

const tick = () => new Promise((r) => setImmediate(r));

/**
 * A fake expertd: `opinion` / `opinions_batch` as the server answers them.
 * Experts: "echo" (opinion {len}), "failing" (the model always fails).
 * With `hold: true`, answers wait until `release()`; with `io: true` they come
 * one loop turn later.
 */
function fakeServer({ hold = false, io = false } = {}) {
  const calls = [];
  const held = [];
  const check = (doc) => {
    if (typeof doc.text !== "string") return { name: "InvalidDocument", message: "document field 'text' must be a string" };
    if (doc.text.length > 100) return { name: "TextTooLong", message: "too long" };
    return null;
  };
  const answerOne = (name, doc) => {
    if (!["echo", "failing"].includes(name)) throw new RemoteError("UnknownExpert", `unknown expert '${name}'`);
    const bad = check(doc);
    if (bad) throw new RemoteError(bad.name, bad.message);
    if (name === "failing") throw new RemoteError("ExpertFailed", "expert 'failing' failed: ValueError: always");
    return { len: doc.text.length };
  };
  const answerBatch = (docs, [name]) => {
    if (!["echo", "failing"].includes(name)) throw new RemoteError("UnknownExpert", `unknown expert '${name}'`);
    return docs.map((doc) => {
      const bad = check(doc);
      if (bad) return { ...doc, opinions: {}, errors: { [name]: bad } };
      if (name === "failing") return { ...doc, opinions: {}, errors: { [name]: { name: "ExpertFailed", message: "expert 'failing' failed: ValueError: always" } } };
      return { ...doc, opinions: { [name]: { len: doc.text.length } } };
    });
  };
  const call = (method, args, options) => {
    calls.push({ method, args, options });
    const run = () => (method === "opinion" ? answerOne(...args) : answerBatch(...args));
    if (io) return new Promise((r) => setImmediate(r)).then(run); // answers come in a later loop turn, as over a socket
    if (!hold) return Promise.resolve().then(run);
    return new Promise((resolve, reject) => held.push(() => {
      try {
        resolve(run());
      } catch (err) {
        reject(err);
      }
    }));
  };
  const release = () => {
    for (const f of held.splice(0)) f();
  };
  const releaseOldest = () => {
    const f = held.shift();
    if (f) f();
  };
  return { calls, call, release, releaseOldest, held };
}

describe("Coalescer (fake server)", () => {
  it("a request alone is one opinion() call, sent within one loop turn", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call });
    const answer = c.opinion("echo", { text: "abc" });
    // sent within one loop turn (no timer): by the next setImmediate it has left
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(srv.calls.length, 1);
    assert.deepEqual(await answer, { len: 3 });
    assert.deepEqual(srv.calls.map((x) => x.method), ["opinion"]);
    assert.deepEqual(srv.calls[0].args, ["echo", { text: "abc" }]);
  });

  it("requests made in the same loop turn become one opinions_batch call, in order", async () => {
    const srv = fakeServer();
    const sizes = [];
    const c = new Coalescer({ call: srv.call, onBatch: (name, n) => sizes.push([name, n]) });
    const texts = Array.from({ length: 20 }, (_, i) => "x".repeat(i + 1));
    const answers = await Promise.all(texts.map((text) => c.opinion("echo", { text })));
    assert.deepEqual(answers, texts.map((t) => ({ len: t.length })));
    assert.equal(srv.calls.length, 1);
    assert.equal(srv.calls[0].method, "opinions_batch");
    assert.deepEqual(srv.calls[0].args, [texts.map((text) => ({ text })), ["echo"]]);
    assert.deepEqual(sizes, [["echo", 20]]);
  });

  it("a batch leaves at 32 documents when a slot is free, without waiting for the end of the loop turn", async () => {
    const srv = fakeServer({ hold: true });
    const c = new Coalescer({ call: srv.call, inFlight: 2 });
    const pending = Array.from({ length: 80 }, (_, i) => c.opinion("echo", { text: "p".repeat(i + 1) }));
    assert.deepEqual(srv.calls.map((x) => x.args[0].length), [32, 32], "sent at once, in the same loop turn");
    assert.equal(c.queued, 16, "the pipe is full: the rest waits");
    for (let i = 0; i < 5; i++) {
      srv.release();
      await tick();
    }
    assert.deepEqual((await Promise.all(pending)).map((a) => a.len), Array.from({ length: 80 }, (_, i) => i + 1));
    assert.deepEqual(srv.calls.map((x) => x.args[0].length), [32, 32, 16]);
  });

  it("under load, batches leave at (recent load) / inFlight documents, so that they take turns", async () => {
    const srv = fakeServer({ io: true });
    const c = new Coalescer({ call: srv.call, maxBatch: 128, inFlight: 2, keepState: () => true });
    assert.equal(c.splitAt("echo"), 32);
    // 128 clients, each sending its next request as soon as it has its answer.
    let stop = false;
    const client = async (i) => {
      while (!stop) await c.opinion("echo", { text: `c${i}` });
    };
    const clients = Array.from({ length: 128 }, (_, i) => client(i));
    await new Promise((r) => setTimeout(r, 50));
    stop = true;
    await Promise.all(clients);
    while (c._experts.get("echo").inFlight > 0) await tick(); // the last calls' bookkeeping
    const split = c.splitAt("echo");
    assert.ok(split > 32 && split <= 64, `split at ${split}`);
    // The estimate is kept while idle (for the experts the server runs): the
    // next burst leaves in batches of that size at once.
    const hold = fakeServer({ hold: true });
    c._call = hold.call;
    const burst = Array.from({ length: 128 }, (_, i) => c.opinion("echo", { text: `b${i}` }));
    assert.deepEqual(hold.calls.map((x) => x.args[0].length), [split, split]);
    while (c.queued > 0 || hold.held.length > 0) {
      hold.release();
      await tick();
    }
    await Promise.all(burst);
    // Names not kept are forgotten when idle.
    const d = new Coalescer({ call: srv.call });
    await Promise.all(Array.from({ length: 64 }, () => d.opinion("nosuch", { text: "x" }).catch(() => {})));
    assert.equal(d._experts.size, 0);
  });

  it("a queued request whose deadline would pass before a call could answer is 503 Overloaded and never sent", async () => {
    const srv = fakeServer({ hold: true });
    const c = new Coalescer({ call: srv.call, inFlight: 1, keepState: () => true });
    // One call that takes at least 100 ms teaches the coalescer how long calls take.
    const first = c.opinion("echo", { text: "first" });
    await new Promise((r) => setTimeout(r, 100));
    srv.release();
    await first;
    // The pipe is full (inFlight 1); behind it, a request with 10 s to wait and one with 50 ms.
    const busy = c.opinion("echo", { text: "busy" });
    while (srv.held.length === 0) await tick();
    const patient = c.opinion("echo", { text: "patient" }, { timeoutMs: 10000 });
    const hurried = c.opinion("echo", { text: "hurried" }, { timeoutMs: 50 }).catch((err) => err);
    srv.release(); // "busy" answers; the queue's turn comes
    await busy;
    const err = await hurried;
    assert.equal(err.name, "Overloaded", String(err));
    assert.equal(err.status, CATALOGUE.Overloaded.status);
    assert.match(err.message, /deadline/);
    while (srv.held.length === 0) await tick();
    srv.release();
    assert.deepEqual(await patient, { len: 7 });
    const sent = srv.calls.flatMap((x) => (x.method === "opinion" ? [x.args[1].text] : x.args[0].map((d) => d.text)));
    assert.deepEqual(sent, ["first", "busy", "patient"], "the hurried request was never sent");
  });

  it("a batch leaves once it has maxBatch documents, without waiting for the end of the loop turn", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call, maxBatch: 4, inFlight: 1 });
    const pending = [1, 2, 3, 4].map((i) => c.opinion("echo", { text: "s".repeat(i) }));
    assert.equal(srv.calls.length, 1, "sent at once, in the same loop turn");
    assert.equal(srv.calls[0].args[0].length, 4);
    await Promise.all(pending);
  });

  it("experts are coalesced separately", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call });
    await Promise.all([c.opinion("echo", { text: "a" }), c.opinion("echo", { text: "b" }), c.opinion("failing", { text: "c" }).catch(() => {})]);
    assert.deepEqual(srv.calls.map((x) => [x.method, x.method === "opinion" ? x.args[0] : x.args[1][0]]).sort(), [["opinion", "failing"], ["opinions_batch", "echo"]]);
  });

  it("at most inFlight calls per expert: later requests queue and leave together", async () => {
    const srv = fakeServer({ hold: true });
    const c = new Coalescer({ call: srv.call, inFlight: 1 });
    const first = c.opinion("echo", { text: "a" });
    await tick();
    assert.equal(srv.calls.length, 1);
    const later = [1, 2, 3, 4].map((i) => c.opinion("echo", { text: "b".repeat(i) }));
    await tick();
    await tick();
    assert.equal(srv.calls.length, 1, "the pipe is full: nothing more is sent");
    assert.equal(c.queued, 4);
    srv.release();
    assert.deepEqual(await first, { len: 1 });
    await tick();
    await tick();
    assert.equal(srv.calls.length, 2);
    assert.equal(srv.calls[1].method, "opinions_batch");
    assert.equal(srv.calls[1].args[0].length, 4);
    srv.release();
    assert.deepEqual(await Promise.all(later), [{ len: 1 }, { len: 2 }, { len: 3 }, { len: 4 }]);
  });

  it("a batch closes at maxBatch documents", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call, maxBatch: 4, inFlight: 3 });
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => c.opinion("echo", { text: "y".repeat(i + 1) })));
    assert.deepEqual(answers.map((a) => a.len), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(srv.calls.map((x) => (x.method === "opinion" ? 1 : x.args[0].length)), [4, 4, 2]);
  });

  it("a batch closes at maxBytes; a larger document still goes, alone", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call, maxBytes: 100, inFlight: 8 });
    const docs = [40, 40, 40, 500, 10].map((n) => ({ bytes: n, doc: { text: "z" } }));
    await Promise.all(docs.map(({ bytes, doc }) => c.opinion("echo", doc, { bytes })));
    assert.deepEqual(srv.calls.map((x) => (x.method === "opinion" ? 1 : x.args[0].length)), [2, 1, 1, 1]);
    // Without a size hint the document is measured.
    const srv2 = fakeServer();
    const c2 = new Coalescer({ call: srv2.call, maxBytes: 30, inFlight: 8 });
    await Promise.all([c2.opinion("echo", { text: "0123456789" }), c2.opinion("echo", { text: "0123456789" })]);
    assert.equal(srv2.calls.length, 2, "each {\"text\": 10 chars} is 19 bytes: two do not fit in 30");
  });

  it("each caller gets its own document error; the others their opinion", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call });
    const results = await Promise.allSettled([
      c.opinion("echo", { text: "good" }),
      c.opinion("echo", { text: 5 }),
      c.opinion("echo", { text: "w".repeat(101) }),
      c.opinion("echo", { text: "fine" }),
    ]);
    assert.equal(srv.calls.length, 1);
    assert.deepEqual(results[0], { status: "fulfilled", value: { len: 4 } });
    assert.deepEqual(results[3], { status: "fulfilled", value: { len: 4 } });
    const [bad, long] = [results[1].reason, results[2].reason];
    assert.ok(bad instanceof RemoteError);
    assert.deepEqual([bad.name, bad.status, bad.message], ["InvalidDocument", 400, "document field 'text' must be a string"]);
    assert.deepEqual([long.name, long.status], ["TextTooLong", 413]);
  });

  it("a model failure goes to each caller with its own error, without asking again", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call });
    const results = await Promise.allSettled([1, 2, 3].map((i) => c.opinion("failing", { text: "t".repeat(i) })).concat(c.opinion("failing", { nope: 1 })));
    for (const r of results.slice(0, 3)) {
      assert.equal(r.status, "rejected");
      assert.deepEqual([r.reason.name, r.reason.status], ["ExpertFailed", 422]);
    }
    assert.equal(results[3].reason.name, "InvalidDocument");
    assert.deepEqual(srv.calls.map((x) => x.method), ["opinions_batch"]);
  });

  it("a failure of the whole call goes to every caller of the batch", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call });
    const results = await Promise.allSettled([c.opinion("nosuch", { text: "a" }), c.opinion("nosuch", { text: "b" })]);
    assert.equal(srv.calls.length, 1);
    for (const r of results) assert.deepEqual([r.reason.name, r.reason.status], ["UnknownExpert", 404]);
    assert.equal(results[0].reason, results[1].reason);

    const timeout = new RpcTimeoutError("expertd did not answer opinions_batch() within 5 ms");
    const c2 = new Coalescer({ call: () => Promise.reject(timeout) });
    const r2 = await Promise.allSettled([c2.opinion("echo", { text: "a" }), c2.opinion("echo", { text: "b" })]);
    assert.deepEqual(r2.map((r) => r.reason), [timeout, timeout]);
  });

  it("an answer of the wrong shape is a 502 ProtocolError", async () => {
    const c = new Coalescer({ call: async () => [] });
    const results = await Promise.allSettled([c.opinion("echo", { text: "a" }), c.opinion("echo", { text: "b" })]);
    for (const r of results) {
      assert.ok(r.reason instanceof HttpError);
      assert.deepEqual([r.reason.name, r.reason.status], ["ProtocolError", 502]);
    }
  });

  it("a batch that cannot be sent (local error) is asked one document at a time", async () => {
    const srv = fakeServer();
    const call = (method, args, o) => {
      if (method === "opinions_batch") {
        srv.calls.push({ method });
        return Promise.reject(Object.assign(new Error("cannot encode"), { local: true }));
      }
      return srv.call(method, args, o);
    };
    const c = new Coalescer({ call });
    assert.deepEqual(await Promise.all([c.opinion("echo", { text: "a" }), c.opinion("echo", { text: "bb" })]), [{ len: 1 }, { len: 2 }]);
    assert.deepEqual(srv.calls.map((x) => x.method), ["opinions_batch", "opinion", "opinion"]);
  });

  it("each request keeps its deadline: the call gets the time left, a queued or sent request expires alone", async () => {
    const srv = fakeServer({ hold: true });
    const expired = new RpcTimeoutError("expertd did not answer opinion() within 150 ms");
    const c = new Coalescer({ call: srv.call, timeoutMs: 150, inFlight: 1, timeoutError: async () => expired });
    const first = c.opinion("echo", { text: "a" });
    first.catch(() => {});
    await tick();
    assert.ok(srv.calls[0].options.timeoutMs > 100 && srv.calls[0].options.timeoutMs <= 150, String(srv.calls[0].options.timeoutMs));
    const started = Date.now();
    const queued = c.opinion("echo", { text: "b" });
    await assert.rejects(queued, (err) => err === expired);
    const took = Date.now() - started;
    assert.ok(took >= 140 && took < 1000, `took ${took} ms`);
    assert.equal(c.queued, 0);
    await assert.rejects(first, (err) => err === expired);
    srv.release();
    await tick();
    assert.equal(srv.calls.length, 1, "the expired request was never sent");
  });

  it("a batch lasts as long as its latest member waits; an early member's deadline fails only it", async () => {
    const srv = fakeServer({ hold: true });
    const expired = new RpcTimeoutError("expertd did not answer opinion() within its deadline");
    const c = new Coalescer({ call: srv.call, timeoutMs: 10000, inFlight: 1, timeoutError: async () => expired });
    const busy = c.opinion("echo", { text: "busy" });
    await tick();
    const late = c.opinion("echo", { text: "late" }, { timeoutMs: 60 });
    late.catch(() => {});
    const fresh = Array.from({ length: 10 }, (_, i) => c.opinion("echo", { text: "f".repeat(i + 1) }));
    srv.releaseOldest();
    assert.deepEqual(await busy, { len: 4 });
    await tick();
    await tick();
    assert.equal(srv.calls.length, 2);
    assert.equal(srv.calls[1].method, "opinions_batch");
    assert.equal(srv.calls[1].args[0].length, 11);
    assert.ok(srv.calls[1].options.timeoutMs > 5000, `the batch call got ${srv.calls[1].options.timeoutMs} ms`);
    await assert.rejects(late, (err) => err === expired);
    srv.release();
    assert.deepEqual(await Promise.all(fresh), Array.from({ length: 10 }, (_, i) => ({ len: i + 1 })));
  });

  it("a full queue is 503 Overloaded with Retry-After at once; the queued requests still get answers", async () => {
    const srv = fakeServer({ hold: true });
    const c = new Coalescer({ call: srv.call, inFlight: 1, maxQueue: 3 });
    const busy = c.opinion("echo", { text: "busy" });
    await tick();
    const queued = [1, 2, 3].map((i) => c.opinion("echo", { text: "q".repeat(i) }));
    const over = c.opinion("echo", { text: "over" });
    await assert.rejects(over, (err) => err.status === 503 && err.name === "Overloaded" && err.headers["Retry-After"] === "1"
      && /queue for expert "echo" is full \(3 requests waiting\)/.test(err.message));
    assert.equal(c.queued, 3);
    srv.release();
    assert.deepEqual(await busy, { len: 4 });
    while (srv.held.length === 0) await tick();
    srv.release();
    assert.deepEqual(await Promise.all(queued), [{ len: 1 }, { len: 2 }, { len: 3 }]);
  });

  it("waitMs > 0 collects requests over several loop turns", async () => {
    const srv = fakeServer();
    const c = new Coalescer({ call: srv.call, waitMs: 30 });
    const a = c.opinion("echo", { text: "a" });
    await tick();
    await new Promise((r) => setTimeout(r, 5));
    const b = c.opinion("echo", { text: "bb" });
    assert.deepEqual(await Promise.all([a, b]), [{ len: 1 }, { len: 2 }]);
    assert.equal(srv.calls.length, 1);
    assert.equal(srv.calls[0].method, "opinions_batch");
  });

  it("maxBatch 1: no coalescing, one opinion() call per request", async () => {
    const srv = fakeServer();
    const sizes = [];
    const c = new Coalescer({ call: srv.call, maxBatch: 1, onBatch: (n, s) => sizes.push(s) });
    assert.equal(c.enabled, false);
    const answers = await Promise.all([1, 2, 3].map((i) => c.opinion("echo", { text: "q".repeat(i) })));
    assert.deepEqual(answers, [{ len: 1 }, { len: 2 }, { len: 3 }]);
    assert.deepEqual(srv.calls.map((x) => x.method), ["opinion", "opinion", "opinion"]);
    assert.deepEqual(sizes, [1, 1, 1]);
  });

  it("rejectQueued fails what has not been sent", async () => {
    const srv = fakeServer({ hold: true });
    const c = new Coalescer({ call: srv.call, inFlight: 1 });
    const first = c.opinion("echo", { text: "a" });
    await tick();
    const queued = c.opinion("echo", { text: "b" });
    const closing = new HttpError(503, "ServerUnavailable", "the bridge is shutting down");
    c.rejectQueued(closing);
    await assert.rejects(queued, (err) => err === closing);
    srv.release();
    assert.deepEqual(await first, { len: 1 });
  });

  it("rejects bad options", () => {
    assert.throws(() => new Coalescer({}), TypeError);
    assert.throws(() => new Coalescer({ call: () => {}, maxBatch: 0 }), RangeError);
    assert.throws(() => new Coalescer({ call: () => {}, inFlight: 0 }), RangeError);
    assert.throws(() => new Coalescer({ call: () => {}, waitMs: -1 }), RangeError);
    assert.throws(() => new Coalescer({ call: () => {}, maxQueue: 0 }), RangeError);
  });
});
