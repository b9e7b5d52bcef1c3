"use strict";
/** sharedCall: one call for every caller who asks while it runs, its answer kept for freshMs. */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { sharedCall } = require("../src/shared_call");

/** A call that counts how often it ran and settles when told. */
function controlled() {
  const calls = [];
  const fn = () => new Promise((resolve, reject) => calls.push({ resolve, reject }));
  return { fn, calls };
}

describe("sharedCall", () => {
  it("callers who ask while a call runs share it", async () => {
    const { fn, calls } = controlled();
    const shared = sharedCall(fn);
    const answers = Promise.all([shared(), shared(), shared()]);
    await new Promise(setImmediate);
    assert.equal(calls.length, 1);
    calls[0].resolve("up");
    assert.deepEqual(await answers, ["up", "up", "up"]);
    // freshMs 0: the next caller calls again
    const next = shared();
    await new Promise(setImmediate);
    assert.equal(calls.length, 2);
    calls[1].resolve("up again");
    assert.equal(await next, "up again");
  });

  it("keeps an answer for freshMs, then calls again", async () => {
    const { fn, calls } = controlled();
    let clock = 1000;
    const shared = sharedCall(fn, { freshMs: 200, now: () => clock });
    const first = shared();
    await new Promise(setImmediate);
    calls[0].resolve(1);
    assert.equal(await first, 1);
    clock += 199;
    assert.equal(await shared(), 1);
    assert.equal(calls.length, 1);
    clock += 1;
    const later = shared();
    await new Promise(setImmediate);
    assert.equal(calls.length, 2);
    calls[1].resolve(2);
    assert.equal(await later, 2);
  });

  it("a failure reaches every caller of that call and is not kept", async () => {
    const { fn, calls } = controlled();
    const shared = sharedCall(fn, { freshMs: 10000 });
    const both = [shared(), shared()];
    await new Promise(setImmediate);
    calls[0].reject(new Error("down"));
    for (const p of both) await assert.rejects(p, /down/);
    const retry = shared();
    await new Promise(setImmediate);
    assert.equal(calls.length, 2, "asked again after the failure");
    calls[1].resolve("back");
    assert.equal(await retry, "back");
  });

  it("staleOnError answers the last answer when a call fails, and fails when there is none", async () => {
    const { fn, calls } = controlled();
    let clock = 0;
    const shared = sharedCall(fn, { freshMs: 100, staleOnError: true, now: () => clock });
    const none = shared();
    await new Promise(setImmediate);
    calls[0].reject(new Error("down"));
    await assert.rejects(none, /down/);
    const first = shared();
    await new Promise(setImmediate);
    calls[1].resolve("list");
    assert.equal(await first, "list");
    clock += 100;
    const stale = shared();
    await new Promise(setImmediate);
    calls[2].reject(new Error("down"));
    assert.equal(await stale, "list");
  });

  it("a call that throws at once is a rejection, not an exception", async () => {
    const shared = sharedCall(() => {
      throw new Error("sync");
    });
    await assert.rejects(shared(), /sync/);
  });
});
