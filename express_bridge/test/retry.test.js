"use strict";
/**
 * src/retry.js: the bridge's retry policy from expertd/protocol.json, the
 * same rule as Python's expertd/retry.py (tests/unit/expertd/test_retry.py).
 */

const { describe, it } = require("node:test");
const assert = require("node:assert/strict");
const { mayAskAgain, Policy, policy, BRIDGE, MAX_ATTEMPTS, MIN_RETRY_MS, RETRYABLE } = require("../src/retry");
const { RETRY_PROFILES, ERRORS } = require("../src/spec");

describe("retry policy", () => {
  it("reads the bridge's parameters from the spec", () => {
    const p = RETRY_PROFILES.bridge;
    assert.equal(BRIDGE.baseMs, p.base_s * 1000);
    assert.equal(BRIDGE.capMs, p.cap_s * 1000);
    assert.equal(BRIDGE.factor, p.factor);
    assert.deepEqual(BRIDGE.jitter, p.jitter);
    assert.equal(MAX_ATTEMPTS, p.max_attempts);
    assert.equal(MIN_RETRY_MS, p.min_retry_s * 1000);
  });

  it("keeps the bridge's backoff as it was: 25 ms doubling, at most 500 ms, no jitter", () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((n) => BRIDGE.pauseMs(n)), [25, 50, 100, 200, 400, 500, 500]);
  });

  it("bounds every pause by the cap, and jitter within its range", () => {
    const p = new Policy({ baseMs: 50, factor: 2, capMs: 1000, jitter: [0.5, 1] });
    for (let n = 0; n < 20; n += 1) {
      const full = Math.min(50 * 2 ** n, 1000);
      assert.equal(p.pauseMs(n, () => 0), full * 0.5);
      assert.equal(p.pauseMs(n, () => 1), full);
      const drawn = p.pauseMs(n);
      assert.ok(drawn >= full * 0.5 && drawn <= full, `${n}: ${drawn}`);
    }
  });

  it("gives every profile of the spec a policy", () => {
    for (const name of Object.keys(RETRY_PROFILES)) {
      const p = policy(name);
      assert.ok(p.baseMs > 0 && p.capMs >= p.baseMs && p.factor >= 1, name);
      assert.ok(p.jitter[0] > 0 && p.jitter[0] <= p.jitter[1] && p.jitter[1] <= 1, name);
    }
  });

  it("asks again only what the catalogue marks retryable, and a stateful call only after a refusal before it ran", () => {
    assert.deepEqual([...RETRYABLE].sort(), Object.keys(ERRORS).filter((n) => ERRORS[n].retryable).sort());
    assert.equal(mayAskAgain("opinion", "Overloaded", true), true);
    assert.equal(mayAskAgain("opinion", "RpcTimeout", false), true);
    assert.equal(mayAskAgain("opinion", "InvalidDocument", true), false);
    assert.equal(mayAskAgain("learn", "Overloaded", true), true);
    assert.equal(mayAskAgain("learn", "ShuttingDown", true), true);
    assert.equal(mayAskAgain("learn", "ShuttingDown", false), false); // the connection was lost: it may have run
    assert.equal(mayAskAgain("learn", "LearnBacklogFull", true), true); // nothing was stored
    assert.equal(mayAskAgain("learn", "LearnLimit", true), false); // never fits
    assert.equal(mayAskAgain("learn", "RpcTimeout", false), false);
    assert.equal(mayAskAgain("learn", "ServerUnavailable", false), false);
  });
});
