"use strict";
/**
 * The adaptive limit on requests in flight (src/concurrency_limit.js): pure
 * arithmetic on the latencies it is fed, no clock.
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { AdaptiveLimit } = require("../src/concurrency_limit");

/** Feed one window of `n` answers of `ms` each, then close it. */
function windowOf(limit, ms, { n = 20, reached = false } = {}) {
  for (let i = 0; i < n; i++) limit.sample(ms);
  if (reached) limit.reached();
  return limit.update();
}

describe("AdaptiveLimit", () => {
  it("learns the unloaded floor and grows while the limit is reached without queueing", () => {
    const limit = new AdaptiveLimit({ min: 8, max: 256, initial: 64 });
    windowOf(limit, 10);
    assert.equal(limit.baselineMs, 10);
    assert.equal(limit.limit, 64, "not reached: no reason to grow");
    windowOf(limit, 12, { reached: true });
    assert.equal(limit.limit, 72, "64 + sqrt(64)");
  });

  it("shrinks by a tenth per window while answers queue (median well above the floor), down to min", () => {
    const limit = new AdaptiveLimit({ min: 8, max: 256, initial: 64 });
    windowOf(limit, 10);
    windowOf(limit, 100, { reached: true });
    assert.equal(limit.limit, 57);
    for (let i = 0; i < 50; i++) windowOf(limit, 100, { reached: true });
    assert.equal(limit.limit, 8);
  });

  it("never grows above max, and a window with too few answers changes nothing", () => {
    const limit = new AdaptiveLimit({ min: 1, max: 70, initial: 64 });
    assert.equal(windowOf(limit, 5, { n: 3 }), false);
    assert.equal(limit.baselineMs, null);
    for (let i = 0; i < 5; i++) windowOf(limit, 5, { reached: true });
    assert.equal(limit.limit, 70);
  });

  it("keeps its unloaded floor through a long spell of overload (the limit stays down)", () => {
    const limit = new AdaptiveLimit({ min: 64, max: 256, initial: 256 });
    for (let i = 0; i < 10; i++) windowOf(limit, 8);
    for (let i = 0; i < 400; i++) windowOf(limit, 90, { reached: true }); // 20 s of 50 ms windows
    assert.equal(limit.baselineMs, 8);
    assert.equal(limit.limit, 64);
  });

  it("refuses a min above max", () => {
    assert.throws(() => new AdaptiveLimit({ min: 10, max: 5 }), RangeError);
  });
});
