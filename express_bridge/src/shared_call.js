"use strict";
const { performance } = require("node:perf_hooks");

/**
 * One call to the server shared by every request that asks while it runs.
 *
 * For the cheap GETs anyone may send (/healthz, /experts, /openapi.json):
 * GETs are never shed (admission.js), so without this a flood of them was a
 * flood of RPC calls, all at once. Shared, a flood costs the server one call
 * at a time, and at most one per `freshMs` while the answer is kept.
 */

/**
 * Wrap `fn` so that concurrent callers share one call, and its answer for `freshMs`.
 * A failure is not kept: the next caller after it calls again (with `staleOnError`,
 * callers get the last answer instead, while there is one).
 * @template T
 * @param {() => Promise<T>} fn the call (e.g. an RPC)
 * @param {object} [options]
 * @param {number} [options.freshMs=0] how long an answer is given again without calling (0: only while in flight)
 * @param {boolean} [options.staleOnError=false] a failed call answers the last answer, when there is one
 * @param {() => number} [options.now=performance.now] the clock (ms; monotonic, so a step of the wall clock keeps nothing fresh)
 * @returns {() => Promise<T>}
 */
function sharedCall(fn, { freshMs = 0, staleOnError = false, now = () => performance.now() } = {}) {
  let last = null; // { at, value } of the last answer
  let inFlight = null;
  return function shared() {
    if (last && freshMs > 0 && now() - last.at < freshMs) return Promise.resolve(last.value);
    if (!inFlight) {
      inFlight = Promise.resolve()
        .then(fn)
        .then(
          (value) => {
            last = { at: now(), value };
            return value;
          },
          (err) => {
            if (staleOnError && last) return last.value;
            throw err;
          },
        )
        .finally(() => {
          inFlight = null;
        });
    }
    return inFlight;
  };
}

module.exports = { sharedCall };
