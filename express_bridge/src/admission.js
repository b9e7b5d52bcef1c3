"use strict";
/**
 * Admission control: shed load early and cheaply, before Express.
 *
 * Every HTTP request passes `Admission#admit` first, in the http.Server's own
 * 'request' handler (before routing, body parsing, logging). A request is
 * refused at once with 503 Overloaded (the catalogue's status, Retry-After
 * and the usual JSON error body, written in one call, its body left unread)
 * when either:
 *
 *   - as many requests as the limit are already admitted and not yet
 *     answered (a bound on the work the bridge has taken on: its coalescer
 *     queues and the batches on the wire). The limit adapts to the latency
 *     the admitted requests see (concurrency_limit.js): it grows while they
 *     are answered about as fast as on an unloaded bridge and shrinks when
 *     they start to queue, between 64 and `maxInFlight`; or fixed at
 *     `maxInFlight` with `adaptive` false. Or when
 *   - the event loop lags: the largest delay of Node's event loop over the
 *     last sample (perf_hooks.monitorEventLoopDelay, the signal of
 *     @fastify/under-pressure and toobusy-js) is above `maxLagMs`. A lagging
 *     loop means requests already wait in the sockets, unread; taking on more
 *     makes every one of them late.
 *
 * An NDJSON stream (POST /experts/:name/stream) lasts as long as its client
 * sends lines, and its lines reach the server in batches through its own
 * backpressure: it is counted against its own limit, `maxStreams`, not the
 * limit on requests, so that slow uploads can never take the places of the
 * one-document requests (a stream beyond it is answered 503 Overloaded).
 *
 * A shed request costs the bridge only Node's HTTP parsing and one write, so
 * that under twice its capacity the bridge still spends its time on the
 * requests it admitted (goodput stays near capacity), instead of on requests
 * that fail anyway (congestion collapse). Only requests that bring work for
 * the experts (POST and the other methods that carry a body) are counted and
 * shed: a GET or HEAD (the page and its assets, /openapi.json, /experts,
 * /healthz, /metrics) or an OPTIONS preflight is cheap and is how a user and
 * an operator see the overload, so a busy machine, whose loop lags without
 * any overload of the bridge's own, never breaks the page.
 *
 * Why not a library: @fastify/under-pressure is a Fastify plugin, toobusy-js
 * (2017) and overload-protection (2019) are unmaintained and measure only the
 * loop, not the work in flight; the check itself is a few lines on perf_hooks.
 */

const { monitorEventLoopDelay, performance } = require("node:perf_hooks");
const { catalogueError, errorBody } = require("./errors");
const { ERROR } = require("./spec");
const { AdaptiveLimit } = require("./concurrency_limit");

const DEFAULTS = Object.freeze({ maxInFlight: 256, maxStreams: 32, adaptive: true, maxLagMs: 100, sampleMs: 50 });

/**
 * The path of an NDJSON stream (POST /experts/:name/stream), told before routing: as
 * Express routes it, case aside, in origin form or in absolute form (http://host/...).
 */
const STREAM_PATH = /^(?:[a-z][a-z0-9+.-]*:\/\/[^/?#]*)?\/experts\/[^/?#]+\/stream\/?(?:[?#]|$)/i;

/** Routes whose latency says nothing about queueing (a stream lasts as long as its body). */
const UNTIMED_ROUTES = new Set(["/experts/:name/stream"]);

/**
 * The adaptive limit never goes below this: one full coalesced batch
 * (COALESCE_MAX's default), so that jitter on a busy machine cannot make the
 * bridge shed a load it can serve.
 */
const ADAPTIVE_MIN = 64;

/** Resolution (ms) of the event-loop delay histogram. */
const LAG_RESOLUTION_MS = 10;

/** Methods never counted or shed: they bring no work for the experts. */
const EXEMPT_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** Decides, per request, whether the bridge takes it on; answers the rest 503 Overloaded. */
class Admission {
  /**
   * @param {object} [options]
   * @param {number} [options.maxInFlight=256] requests admitted and not yet answered; more are shed (0: no bound)
   * @param {number} [options.maxStreams=32] NDJSON streams in progress; more are shed (0: no bound)
   * @param {boolean} [options.adaptive=true] the limit adapts below `maxInFlight` to keep latency near its floor
   * @param {number} [options.maxLagMs=100] shed while the event loop's delay over the last sample exceeds this (0: off)
   * @param {number} [options.sampleMs=50] how often the loop's delay is read
   * @param {(reason: string) => void} [options.onShed] called for each shed request ("in_flight", "streams" or "event_loop")
   */
  constructor({ maxInFlight = DEFAULTS.maxInFlight, maxStreams = DEFAULTS.maxStreams, adaptive = DEFAULTS.adaptive,
    maxLagMs = DEFAULTS.maxLagMs, sampleMs = DEFAULTS.sampleMs, onShed } = {}) {
    for (const [k, v] of [["maxInFlight", maxInFlight], ["maxStreams", maxStreams], ["maxLagMs", maxLagMs], ["sampleMs", sampleMs]]) {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`Admission: ${k} must be a number >= 0, got ${v}`);
    }
    this.maxInFlight = Math.floor(maxInFlight);
    this.maxStreams = Math.floor(maxStreams);
    this.maxLagMs = maxLagMs;
    this.onShed = onShed || (() => {});
    /** The adaptive limit, or null (fixed at maxInFlight). */
    this.limiter = adaptive && this.maxInFlight > 0
      ? new AdaptiveLimit({ max: this.maxInFlight, min: Math.min(ADAPTIVE_MIN, this.maxInFlight), initial: Math.min(ADAPTIVE_MIN, this.maxInFlight) })
      : null;
    /** Requests admitted and not yet answered (streams apart). */
    this.inFlight = 0;
    /** NDJSON streams admitted and not yet ended. */
    this.streams = 0;
    /** The event loop's largest delay (ms) over the last sample. */
    this.lagMs = 0;
    /** Shed requests so far, by reason. */
    this.shed = { in_flight: 0, streams: 0, event_loop: 0 };
    this._monitor = null;
    this._timer = null;
    if (this.maxLagMs > 0) {
      this._monitor = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
      this._monitor.enable();
    }
    if (this._monitor || this.limiter) {
      this._timer = setInterval(() => this._sample(), Math.max(10, sampleMs));
      this._timer.unref();
    }
    // The answers are built once: a shed request must cost next to nothing.
    this._answers = {
      in_flight: shedAnswer("the bridge is at capacity (its limit of requests in progress is reached); retry shortly"),
      streams: shedAnswer(`the bridge is at capacity (${this.maxStreams} NDJSON streams are in progress, its limit); retry shortly`),
      event_loop: shedAnswer(`the bridge is at capacity (its event loop lags more than ${this.maxLagMs} ms); retry shortly`),
    };
    const self = this;
    this._release = function release() {
      self._done(this);
    };
    this._releaseStream = () => {
      this.streams -= 1;
    };
  }

  /** The limit on requests in flight now (0: none). */
  get limit() {
    return this.limiter ? this.limiter.limit : this.maxInFlight;
  }

  /**
   * Admit `req` (true: hand it to the app) or answer it 503 Overloaded now (false).
   * @param {import("node:http").IncomingMessage} req
   * @param {import("node:http").ServerResponse} res
   * @returns {boolean}
   */
  admit(req, res) {
    if (EXEMPT_METHODS.has(req.method)) return true;
    if (STREAM_PATH.test(req.url)) return this._admitStream(req, res);
    const reason = this._refusal();
    if (reason === null) {
      this.inFlight += 1;
      if (this.limiter && this.inFlight >= this.limiter.limit) this.limiter.reached();
      res.admittedAt = performance.now();
      res.once("close", this._release);
      return true;
    }
    return this._refuse(reason, res);
  }

  /** Admit an NDJSON stream against `maxStreams` (and the loop's lag), or refuse it. */
  _admitStream(req, res) {
    const reason = this.maxStreams > 0 && this.streams >= this.maxStreams ? "streams" : this._lagged() ? "event_loop" : null;
    if (reason !== null) return this._refuse(reason, res);
    this.streams += 1;
    res.once("close", this._releaseStream);
    return true;
  }

  /** Answer `res` 503 Overloaded for `reason` now; false. */
  _refuse(reason, res) {
    this.shed[reason] += 1;
    this.onShed(reason);
    const { status, headers, body } = this._answers[reason];
    res.writeHead(status, headers);
    res.end(body);
    return false;
  }

  /** An admitted request was answered (or its client went away). */
  _done(res) {
    this.inFlight -= 1;
    if (this.limiter && res.statusCode < 300 && res.writableFinished && !UNTIMED_ROUTES.has(res.locals && res.locals.route)) {
      this.limiter.sample(performance.now() - res.admittedAt);
    }
  }

  /** Read the event loop's delay over the last sample; close the limit's window. */
  _sample() {
    if (this._monitor) {
      // The histogram counts the timer's own resolution too (as @fastify/under-pressure notes).
      this.lagMs = Math.max(0, this._monitor.max / 1e6 - LAG_RESOLUTION_MS);
      this._monitor.reset();
    }
    if (this.limiter) this.limiter.update();
  }

  /** Stop sampling the event loop (the bridge is closing). */
  close() {
    if (this._timer) clearInterval(this._timer);
    if (this._monitor) this._monitor.disable();
    this._timer = null;
    this._monitor = null;
  }

  /** Why a request is refused now ("in_flight", "event_loop"), or null when it is admitted. */
  _refusal() {
    const limit = this.limit;
    if (limit > 0 && this.inFlight >= limit) {
      if (this.limiter) this.limiter.reached();
      return "in_flight";
    }
    if (this._lagged()) return "event_loop";
    return null;
  }

  /** True while the event loop lags more than `maxLagMs` (the check is on). */
  _lagged() {
    return this.maxLagMs > 0 && this.lagMs > this.maxLagMs;
  }
}

/** The status, headers and body of a 503 Overloaded answer saying `message`. */
function shedAnswer(message) {
  const err = catalogueError(ERROR.Overloaded, message);
  const body = Buffer.from(JSON.stringify(errorBody(err)));
  const headers = {
    ...err.headers,
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": body.length,
    "Cache-Control": "no-store",
  };
  return { status: err.status, headers, body };
}

/**
 * An http.Server 'request' listener: `admission` first, then `app` for the admitted.
 * @param {Admission} admission
 * @param {(req: any, res: any) => void} app e.g. the Express app
 * @returns {(req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void}
 */
function admitted(admission, app) {
  return (req, res) => {
    if (admission.admit(req, res)) app(req, res);
  };
}

module.exports = { Admission, admitted, DEFAULTS, EXEMPT_METHODS };
