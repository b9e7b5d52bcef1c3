"use strict";
/**
 * Request coalescing for `opinion(name, doc)`: concurrent requests for the
 * same expert become ONE `opinions_batch(docs, [name])` RPC call.
 *
 * Why: expertd pays a fixed cost per RPC call (gevent greenlet, zerorpc
 * channel, heartbeats, logging: ~0.6 ms) that dwarfs what one more document
 * costs the model inside a batch. Under load, sending N documents in one call
 * instead of N calls frees most of the server's CPU.
 *
 * Policy, per expert:
 *   - A request is queued; a flush is scheduled with `setImmediate` (or after
 *     `waitMs` when that is > 0), so requests that the event loop has already
 *     read (same I/O phase) join the same batch. A request alone is sent at
 *     once (one loop turn later), as a plain `opinion(name, doc)` call.
 *   - At most `inFlight` batches per expert are on the wire. While that pipe
 *     is full, requests queue; when a batch comes back, the queue is sent
 *     (after the same `setImmediate`), so batches grow with load by
 *     themselves and shrink to one document when the bridge is idle.
 *   - A batch closes at `maxBatch` documents or `maxBytes` of (approximate)
 *     JSON; a single document over `maxBytes` still goes, alone.
 *   - Split under steady load: with one big batch per loop turn, the bridge
 *     and the server work in lock-step (the server waits while the bridge
 *     reads 64 requests, then the bridge waits for the answer). So when a
 *     slot is free, a batch leaves as soon as `recent load / inFlight`
 *     documents are queued (at least 32, at most `maxBatch`), without waiting
 *     for the end of the loop turn: at concurrency 64 and `inFlight` 2,
 *     batches of ~32 take turns, and both processes stay busy. "Recent load"
 *     is the largest number of requests queued or in flight lately (it
 *     decays by 1/8 per batch unless requests keep it up).
 *   - Each caller gets its own opinion, or a RemoteError built from its own
 *     `errors[name]` ({name, message}): the same error `opinion()` would have
 *     raised (InvalidDocument 400, TextTooLong 413, ExpertFailed 422, ...).
 *     expertd isolates a failing input itself (it splits a failing model call
 *     until the failing inputs are found), so one poisoned document fails
 *     only its own caller. A failure of the whole call (timeout 504,
 *     unavailable 503, Overloaded 503, UnknownExpert 404, ...) goes to every
 *     caller in the batch.
 *   - Each request keeps its own deadline (`timeoutMs` from when it was
 *     made), queued or sent: a batch call may take as long as its LATEST
 *     member waits (and tells the server so), and a member whose deadline
 *     passes, queued or in flight, ends alone like a timed-out call (504, or
 *     503 when a fresh probe finds the server gone) while the others go on.
 *   - A queued request whose deadline would pass before an answer could
 *     come (less time left than a call for this expert has lately taken) is
 *     answered 503 Overloaded when its turn comes, and never sent: no work
 *     is done for an answer nobody will read.
 *   - The queue of each expert is bounded (`maxQueue` requests waiting to be
 *     sent): a request beyond it is answered at once with 503 Overloaded and
 *     Retry-After, as the server answers when its own queue is full.
 *
 * `maxBatch` 1 disables all of this: every request is one `opinion()` call.
 */

const { RemoteError, HttpError, OverloadedError } = require("./errors");
const { ERROR, METHOD } = require("./spec");
const { records, startSpan } = require("./tracing");

/**
 * Under steady load a batch may leave before the end of a loop turn, but never
 * with fewer documents than this (measured: splitting smaller batches costs
 * the server more calls and gains nothing at concurrency 16-32).
 */
const SPLIT_MIN = 32;

const DEFAULTS = Object.freeze({ maxBatch: 64, maxBytes: 4 * 1024 * 1024, waitMs: 0, inFlight: 2, maxQueue: 256 });

/** Coalesces `opinion(name, doc)` calls per expert into `opinions_batch` calls. */
class Coalescer {
  /**
   * @param {object} options
   * @param {(method: string, args: any[], o: {timeoutMs: number}) => Promise<any>} options.call
   *   the RPC call (ExpertdClient#call: probes, 503/504, RemoteError)
   * @param {(method: string, timeoutMs: number) => Promise<Error>} options.timeoutError
   *   the error for a request whose deadline passed while it was queued
   * @param {number} [options.timeoutMs=30000] each request's deadline, from when it is made
   * @param {number} [options.maxBatch=64] documents per call (1: no coalescing)
   * @param {number} [options.maxBytes=4 MiB] approximate JSON bytes per call
   * @param {number} [options.waitMs=0] extra time to collect a batch (0: one loop turn)
   * @param {number} [options.inFlight=2] batch calls on the wire per expert
   * @param {number} [options.maxQueue=256] requests waiting to be sent, per expert; more are 503 Overloaded
   * @param {(name: string, size: number) => void} [options.onBatch] called for every call sent
   * @param {(name: string) => boolean} [options.keepState] true for names whose state (the load
   *   estimate) is kept while idle, e.g. the experts the server runs; others are forgotten
   *   when idle, so made-up names in URLs cannot grow memory
   */
  constructor({ call, timeoutError, timeoutMs = 30000, maxBatch = DEFAULTS.maxBatch, maxBytes = DEFAULTS.maxBytes,
    waitMs = DEFAULTS.waitMs, inFlight = DEFAULTS.inFlight, maxQueue = DEFAULTS.maxQueue, onBatch, keepState } = {}) {
    if (typeof call !== "function") throw new TypeError("Coalescer needs a call function");
    for (const [k, v, min] of [["maxBatch", maxBatch, 1], ["maxBytes", maxBytes, 1], ["inFlight", inFlight, 1], ["waitMs", waitMs, 0], ["maxQueue", maxQueue, 1]]) {
      if (!Number.isFinite(v) || v < min) throw new RangeError(`Coalescer: ${k} must be a number >= ${min}, got ${v}`);
    }
    this._call = call;
    this._timeoutError = timeoutError;
    this.timeoutMs = timeoutMs;
    this.maxBatch = Math.floor(maxBatch);
    this.maxBytes = maxBytes;
    this.waitMs = waitMs;
    this.inFlight = Math.floor(inFlight);
    this.maxQueue = Math.floor(maxQueue);
    this.onBatch = onBatch || (() => {});
    this._keepState = keepState || (() => false);
    /** @type {Map<string, {queue: object[], head: number, inFlight: number, inFlightDocs: number, peak: number, scheduled: boolean}>} */
    this._experts = new Map();
  }

  /** True when requests are coalesced at all (maxBatch > 1). */
  get enabled() {
    return this.maxBatch > 1;
  }

  /**
   * The opinion of expert `name` on `doc`, possibly asked together with others.
   * @param {string} name
   * @param {object} doc
   * @param {{bytes?: number, timeoutMs?: number, trace?: object}} [options] `bytes`: the document's
   *   JSON size if known (e.g. the request's Content-Length), else it is measured; `trace`: the
   *   request's trace context (a coalesced call carries the first one's, and links to each)
   * @returns {Promise<any>} the opinion, or rejects like `opinion()` would
   */
  opinion(name, doc, { bytes, timeoutMs = this.timeoutMs, trace = null } = {}) {
    if (!this.enabled) {
      this.onBatch(name, 1);
      return this._call(METHOD.opinion, [name, doc], { timeoutMs, trace });
    }
    let state = this._experts.get(name);
    if (state && state.queue.length - state.head >= this.maxQueue) {
      return Promise.reject(new OverloadedError(
        `the bridge's queue for expert ${JSON.stringify(name)} is full (${this.maxQueue} requests waiting); retry shortly`));
    }
    return new Promise((resolve, reject) => {
      if (!state) {
        state = { queue: [], head: 0, inFlight: 0, inFlightDocs: 0, peak: 0, scheduled: false, callMs: null };
        this._experts.set(name, state);
      }
      const size = Number.isFinite(bytes) && bytes > 0 ? bytes : approximateJsonBytes(doc);
      const item = { doc, size, trace, deadline: Date.now() + timeoutMs, timer: null, sent: false, done: false, resolve, reject };
      // Its wait to be sent (tracing on only): ends with the size of the batch it went in.
      item.waiting = trace && records(trace) ? startSpan("coalescer wait", { parent: trace, attributes: { "expertd.expert": name, "expertd.queued": state.queue.length - state.head } }) : null;
      // A request not answered by its deadline (queued or sent) ends like a timed-out call.
      item.timer = setTimeout(() => this._expire(name, state, item, timeoutMs), timeoutMs);
      state.queue.push(item);
      const queued = state.queue.length - state.head;
      state.peak = Math.max(state.peak, queued + state.inFlightDocs);
      if (state.inFlight < this.inFlight && queued >= this._splitAt(state)) {
        // Enough for a batch: it need not wait for the end of this loop turn.
        this._flush(name, state);
      } else {
        this._schedule(name, state);
      }
    });
  }

  /**
   * Fail every queued (not yet sent) request, e.g. on shutdown.
   * @param {Error} err
   */
  rejectQueued(err) {
    for (const state of this._experts.values()) {
      const items = state.queue.slice(state.head);
      state.queue = [];
      state.head = 0;
      for (const item of items) {
        clearTimeout(item.timer);
        endWait(item, err.name || "Error");
        item.done = true;
        item.reject(err);
      }
    }
  }

  /**
   * How many queued documents make a batch for `name` leave at once (for tests and debugging).
   * @param {string} name
   * @returns {number}
   */
  splitAt(name) {
    const state = this._experts.get(name);
    return state ? this._splitAt(state) : Math.min(this.maxBatch, SPLIT_MIN);
  }

  /** How many requests wait, over all experts (for tests and debugging). */
  get queued() {
    let n = 0;
    for (const state of this._experts.values()) n += state.queue.length - state.head;
    return n;
  }

  // -- internals --------------------------------------------------------------

  /**
   * How many queued documents make a batch leave at once, without waiting for
   * the end of the loop turn: `maxBatch`, or less under steady load, so that
   * the load divides into `inFlight` batches that take turns (the server
   * answers one while the bridge reads the requests of the next) instead of
   * one batch that both sides wait for in lock-step. Never below SPLIT_MIN.
   */
  _splitAt(state) {
    return Math.min(this.maxBatch, Math.max(SPLIT_MIN, Math.ceil(state.peak / this.inFlight)));
  }

  /** Drop an idle state, unless it belongs to a name worth remembering. @returns {boolean} idle */
  _forgetIfIdle(name, state) {
    if (state.queue.length !== state.head || state.inFlight !== 0 || state.scheduled) return false;
    if (!this._keepState(name)) this._experts.delete(name);
    return true;
  }

  _schedule(name, state) {
    if (state.scheduled || state.inFlight >= this.inFlight || state.queue.length === state.head) return;
    state.scheduled = true;
    const flush = () => {
      state.scheduled = false;
      this._flush(name, state);
      this._forgetIfIdle(name, state);
    };
    if (this.waitMs > 0) setTimeout(flush, this.waitMs);
    else setImmediate(flush);
  }

  _flush(name, state) {
    while (state.inFlight < this.inFlight && state.queue.length > state.head) {
      const batch = [];
      let bytes = 0;
      const now = Date.now();
      while (state.queue.length > state.head && batch.length < this.maxBatch) {
        const item = state.queue[state.head];
        if (state.callMs !== null && item.deadline - now < state.callMs) {
          state.queue[state.head++] = undefined;
          this._shed(name, state, item);
          continue;
        }
        if (batch.length > 0 && bytes + item.size > this.maxBytes) break;
        state.queue[state.head++] = undefined;
        item.sent = true;
        batch.push(item);
        bytes += item.size;
      }
      if (state.head === state.queue.length) {
        state.queue = [];
        state.head = 0;
      } else if (state.head > 1024 && state.head * 2 > state.queue.length) {
        state.queue = state.queue.slice(state.head);
        state.head = 0;
      }
      if (batch.length === 0) break; // every queued request was shed
      state.inFlight += 1;
      state.inFlightDocs += batch.length;
      this._send(name, state, batch)
        .catch((err) => {
          // A bug of ours, not the server's: nobody may be left waiting.
          for (const item of batch) if (!item.done) this._settle(state, item, err);
        })
        .finally(() => {
          state.inFlight -= 1;
          // The load estimate decays (by 1/8 per batch) unless new requests keep it up.
          state.peak -= Math.ceil(state.peak / 8);
          if (!this._forgetIfIdle(name, state)) this._schedule(name, state);
        });
    }
  }

  /** A queued request that cannot be answered within its deadline: 503 Overloaded, never sent. */
  _shed(name, state, item) {
    item.done = true;
    clearTimeout(item.timer);
    endWait(item, ERROR.Overloaded);
    item.reject(new OverloadedError(
      `the request for expert ${JSON.stringify(name)} could not be answered within its deadline ` +
      `(${Math.max(0, item.deadline - Date.now())} ms left, a call takes about ${Math.round(state.callMs)} ms); retry shortly`));
  }

  /** How long calls for this expert take lately (an average that moves by a fifth per call). */
  _timed(state, started) {
    const ms = Date.now() - started;
    state.callMs = state.callMs === null ? ms : 0.8 * state.callMs + 0.2 * ms;
  }

  /** Send one batch and settle each of its callers. Never rejects. */
  async _send(name, state, batch) {
    this.onBatch(name, batch.length);
    for (const item of batch) {
      if (item.waiting) item.waiting.set({ "expertd.batch_size": batch.length }).end();
      item.waiting = null;
    }
    if (batch.length === 1) {
      await this._alone(name, state, batch[0]); // alone: exactly the call made without coalescing
      return;
    }
    // The call may take as long as its latest member waits; earlier members expire on their own.
    let deadline = 0;
    for (const item of batch) deadline = Math.max(deadline, item.deadline);
    const timeoutMs = Math.max(1, deadline - Date.now());
    let results;
    const started = Date.now();
    try {
      const traced = batch.filter((item) => item.trace).map((item) => item.trace);
      // The call hangs under a sampled request if there is one (its trace records the call), else the first.
      const parent = traced.find((t) => (t.flags & 1) === 1) || traced[0] || null;
      results = await this._call(METHOD.opinions_batch, [batch.map((item) => item.doc), [name]],
        { timeoutMs, trace: parent, links: traced });
      this._timed(state, started);
      if (!Array.isArray(results) || results.length !== batch.length) {
        throw new HttpError(502, "ProtocolError", `bad answer from expertd: opinions_batch returned ${Array.isArray(results) ? results.length : typeof results} answers for ${batch.length} documents`);
      }
    } catch (err) {
      // TooManyDocuments: the batch outgrew the expert's queue (queue.max_docs), though each
      // request alone fits: ask for each on its own.
      if (err && (err.local || err.name === ERROR.TooManyDocuments)) {
        // The batch could not even be sent (e.g. one document msgpack cannot
        // encode): that is one document's problem, so ask each on its own.
        await Promise.all(batch.map((item) => this._alone(name, state, item)));
        return;
      }
      for (const item of batch) this._settle(state, item, err);
      return;
    }
    batch.forEach((item, i) => {
      const answer = results[i];
      const error = answer && answer.errors && answer.errors[name];
      if (error) {
        this._settle(state, item, new RemoteError(error.name, error.message));
      } else if (answer && answer.opinions && Object.prototype.hasOwnProperty.call(answer.opinions, name)) {
        this._settle(state, item, null, answer.opinions[name]);
      } else {
        this._settle(state, item, new HttpError(502, "ProtocolError", `bad answer from expertd: opinions_batch gave document ${i} neither an opinion nor an error from ${name}`));
      }
    });
  }

  /** Ask `opinion(name, doc)` for one request, within what is left of its deadline. */
  async _alone(name, state, item) {
    if (item.done) return; // its deadline passed already
    const started = Date.now();
    try {
      const opinion = await this._call(METHOD.opinion, [name, item.doc], { timeoutMs: Math.max(1, item.deadline - Date.now()), trace: item.trace });
      this._timed(state, started);
      this._settle(state, item, null, opinion);
    } catch (err) {
      this._settle(state, item, err);
    }
  }

  /**
   * Answer one sent request. The document stops counting as in flight at
   * once, before its caller (who may send the next request right away) runs.
   */
  _settle(state, item, err, value) {
    if (item.done) return;
    item.done = true;
    clearTimeout(item.timer);
    state.inFlightDocs -= 1;
    if (err) item.reject(err);
    else item.resolve(value);
  }

  /** A request's deadline passed: it alone ends now, queued or sent (its batch goes on for the others). */
  async _expire(name, state, item, timeoutMs) {
    if (item.done) return;
    item.done = true;
    if (item.sent) {
      state.inFlightDocs -= 1;
    } else {
      const i = state.queue.indexOf(item, state.head);
      if (i >= 0) state.queue.splice(i, 1);
      this._forgetIfIdle(name, state);
    }
    let err;
    try {
      err = this._timeoutError ? await this._timeoutError(METHOD.opinion, timeoutMs) : null;
    } catch (e) {
      err = e;
    }
    endWait(item, (err && err.name) || "Error");
    item.reject(err || new Error(`opinion() not sent within ${timeoutMs} ms`));
  }
}

/** End a queued request's wait span (tracing on) with the error that ended its wait. */
function endWait(item, errorName) {
  if (!item.waiting) return;
  item.waiting.fail(errorName).end();
  item.waiting = null;
}

/**
 * A document's JSON size in UTF-8 bytes (used only when the caller does not
 * know it, e.g. a chunked request body).
 * @param {unknown} doc
 * @returns {number}
 */
function approximateJsonBytes(doc) {
  try {
    return Buffer.byteLength(JSON.stringify(doc) || "", "utf8");
  } catch {
    return 1;
  }
}

module.exports = { Coalescer, DEFAULTS };
