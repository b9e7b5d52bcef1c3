"use strict";
/**
 * An adaptive limit on requests in flight, from the latencies they see.
 *
 * The idea of TCP Vegas and of Netflix's concurrency-limits: the latency of
 * an unloaded bridge is the floor; once more requests are taken on than the
 * bridge and the server can work on at once, the extra ones only queue, and
 * latency rises above the floor. So, in windows of at least `minSamples`
 * answers:
 *
 *   - the floor (`baselineMs`) is the lowest window median of the last
 *     `baselineWindows` windows (1,200: at least a minute under load, so
 *     that the floor outlives a spell of overload instead of rising to the
 *     loaded latency, as it did with 100 windows (5 s): the limit then stayed
 *     at its maximum and at twice the capacity the p99 of the answered
 *     requests was 660x unloaded instead of 7.5x; and it still follows a
 *     change of expert or machine);
 *   - when the window's median is above `tolerance` x the floor (plus
 *     `slackMs`, so a 2 ms floor does not make 4 ms "queueing"; generous,
 *     because coalesced batches grow, and take longer, with the load, which
 *     is not queueing), the limit
 *     shrinks by a tenth (multiplicative decrease). The median, not a tail
 *     percentile: queueing moves every answer, a pause of the machine only
 *     a few, and the limit should not fall for those;
 *   - when it is below and the limit was reached in the window, it grows by
 *     about its square root (the work was there, and it did not queue).
 *
 * The limit stays within [min, max]. Nothing here reads a clock: the caller
 * feeds latencies (`sample`) and closes windows (`update`), e.g. on a timer.
 */

const DEFAULTS = Object.freeze({ min: 64, max: 256, initial: 64, tolerance: 4, slackMs: 10, minSamples: 20, baselineWindows: 1200 });

/** Quantile `q` (0-1) of an array of numbers (sorted in place). */
function quantile(values, q) {
  values.sort((a, b) => a - b);
  return values[Math.min(values.length - 1, Math.floor(q * values.length))];
}

/** An AIMD concurrency limit that keeps latency near its unloaded floor. */
class AdaptiveLimit {
  /**
   * @param {object} [options]
   * @param {number} [options.min=64] the limit never goes below this
   * @param {number} [options.max=256] nor above this
   * @param {number} [options.initial=64] the limit before any answer is seen (within [min, max])
   * @param {number} [options.tolerance=4] a window's median above tolerance x floor + slackMs means queueing
   * @param {number} [options.slackMs=10]
   * @param {number} [options.minSamples=20] answers a window needs before it counts
   * @param {number} [options.baselineWindows=1200] windows the floor is the lowest median of
   */
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    for (const k of Object.keys(DEFAULTS)) {
      if (!Number.isFinite(o[k]) || o[k] < 0) throw new RangeError(`AdaptiveLimit: ${k} must be a number >= 0, got ${o[k]}`);
    }
    if (o.min < 1 || o.max < o.min) throw new RangeError(`AdaptiveLimit: need 1 <= min <= max, got min ${o.min}, max ${o.max}`);
    this.options = o;
    /** The current limit on requests in flight. */
    this.limit = Math.min(o.max, Math.max(o.min, Math.floor(o.initial)));
    /** The unloaded latency floor (ms), or null before the first window. */
    this.baselineMs = null;
    this._samples = [];
    this._medians = [];
    this._reached = false;
  }

  /**
   * Count one answered request.
   * @param {number} latencyMs from when it was admitted to its answer
   */
  sample(latencyMs) {
    this._samples.push(latencyMs);
  }

  /** Note that the limit was reached (a request was refused, or admitted as the last one). */
  reached() {
    this._reached = true;
  }

  /**
   * Close the window if it holds enough answers: move the floor and the limit.
   * @returns {boolean} true when a window was closed
   */
  update() {
    const o = this.options;
    if (this._samples.length < o.minSamples) return false;
    const samples = this._samples;
    this._samples = [];
    const reached = this._reached;
    this._reached = false;
    const median = quantile(samples, 0.5);
    this._medians.push(median);
    if (this._medians.length > o.baselineWindows) this._medians.shift();
    this.baselineMs = Math.min(...this._medians);
    if (median > o.tolerance * this.baselineMs + o.slackMs) {
      this.limit = Math.max(o.min, Math.floor(this.limit * 0.9));
    } else if (reached) {
      this.limit = Math.min(o.max, this.limit + Math.max(1, Math.round(Math.sqrt(this.limit))));
    }
    return true;
  }
}

module.exports = { AdaptiveLimit, DEFAULTS };
