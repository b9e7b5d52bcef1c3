"use strict";
/**
 * The retry policy, on the Node side: the same rule and parameters as
 * Python's `expertd/retry.py`, from the same file (`expertd/protocol.json`,
 * section `retry`, profile `bridge`).
 *
 * What is asked again: a failure whose error the spec marks retryable, and
 * for a stateful method (learn) only a refusal the server gave before it ran.
 * How: the pause before try n+1 is min(base * factor^n, cap) times a factor
 * drawn uniformly from the profile's jitter. When to give up: after
 * `maxAttempts` tries, or when less than `minRetryMs` of the call's deadline
 * is left (rpc.js `_retry` applies it).
 */

const { ERRORS, STATEFUL_METHODS, REFUSED_BEFORE_RUNNING, RETRY_PROFILES } = require("./spec");

/** Error names after which asking again may succeed. */
const RETRYABLE = Object.freeze(new Set(Object.entries(ERRORS).filter(([, e]) => e.retryable).map(([name]) => name)));

/**
 * Whether a call of `method` that failed with error `name` may be asked again
 * (as `expertd.retry.may_ask_again`): a retryable failure, and for a stateful
 * method only a refusal given before it ran.
 * @param {string} method
 * @param {string} name
 * @param {boolean} remote the server answered with this error (not a local timeout or a lost connection)
 * @returns {boolean}
 */
function mayAskAgain(method, name, remote) {
  return RETRYABLE.has(name) && (!STATEFUL_METHODS.has(method) || (remote && REFUSED_BEFORE_RUNNING.has(name)));
}

/** Backoff parameters in milliseconds: base, factor, cap, jitter [low, high]. */
class Policy {
  /**
   * @param {{baseMs: number, factor: number, capMs: number, jitter: [number, number]}} params
   */
  constructor({ baseMs, factor, capMs, jitter }) {
    Object.assign(this, { baseMs, factor, capMs, jitter });
    Object.freeze(this);
  }

  /**
   * Milliseconds to wait before try `attempt + 1` (`attempt` 0 is the first retry).
   * @param {number} attempt
   * @param {() => number} [draw=Math.random] a number in [0, 1)
   */
  pauseMs(attempt, draw = Math.random) {
    const [low, high] = this.jitter;
    return Math.min(this.baseMs * this.factor ** attempt, this.capMs) * (low + (high - low) * draw());
  }
}

/**
 * The spec's backoff parameters for a client ("pipe", "client" or "bridge").
 * @param {string} profile
 * @returns {Policy}
 */
function policy(profile) {
  const p = RETRY_PROFILES[profile];
  return new Policy({ baseMs: p.base_s * 1000, factor: p.factor, capMs: p.cap_s * 1000, jitter: [p.jitter[0], p.jitter[1]] });
}

/** The bridge's policy, its attempts at most (the first and its retries), and the deadline a retry needs left. */
const BRIDGE = policy("bridge");
const MAX_ATTEMPTS = RETRY_PROFILES.bridge.max_attempts;
const MIN_RETRY_MS = RETRY_PROFILES.bridge.min_retry_s * 1000;

module.exports = { mayAskAgain, RETRYABLE, Policy, policy, BRIDGE, MAX_ATTEMPTS, MIN_RETRY_MS };
