"use strict";
/**
 * Connectivity: is expertd answering? ("unknown" | "up" | "down")
 *
 * The zerorpc client cannot tell "nothing listens" from "slow": both end as
 * TimeoutExpired (or HeartbeatError). So connectivity is learnt from cheap
 * `health()` probes, each on a fresh, short-lived socket with a ZeroMQ
 * monitor: a refused connection is seen at once (`refused: true`), a silent
 * one after `probeTimeoutMs`. Concurrent callers share one probe, and a
 * result younger than `probeCacheMs` is reused.
 */

const { EventEmitter } = require("node:events");
const { newZerorpcClient } = require("./zerorpc_client");
const { METHOD } = require("./spec");

/**
 * Ask `health()` once on a fresh socket.
 * @param {{endpoint: string, timeoutMs: number, heartbeatMs: number, logger: object, curve?: object}} options
 * @returns {Promise<{ok: boolean, refused: boolean, reason: string, health?: object}>}
 */
function probeHealth({ endpoint, timeoutMs, heartbeatMs, logger, curve }) {
  return new Promise((resolve) => {
    let client;
    let done = false;
    let timer = null;
    const finish = (ok, reason, { health, refused = false } = {}) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      // Close on the next tick: never from inside the socket's own callbacks.
      setImmediate(() => {
        try {
          client.close(0);
        } catch {
          /* already closed */
        }
      });
      resolve({ ok, refused, reason, health });
    };
    try {
      client = newZerorpcClient({ timeoutMs, heartbeatMs, logger, curve });
      const zmqSocket = client._socket && client._socket._zmqSocket;
      if (zmqSocket && typeof zmqSocket.monitor === "function") {
        zmqSocket.monitor();
        // A refused or dropped connection: nothing listens at the endpoint.
        zmqSocket.on("connect_retry", () => finish(false, "connection refused", { refused: true }));
      }
      timer = setTimeout(() => finish(false, `no answer to health() within ${timeoutMs} ms`), timeoutMs);
      client.connect(endpoint);
      client.invoke(METHOD.health, (err, res) => {
        if (err) finish(false, `health() failed: ${err.name}: ${err.message}`);
        else if (!res || res.status !== "ok") finish(false, `health() says ${JSON.stringify(res && res.status)}`);
        else finish(true, "", { health: res });
      });
    } catch (err) {
      finish(false, `cannot connect: ${err.message}`);
    }
  });
}

/**
 * The connectivity state of one endpoint, kept by probes. Emits
 * `"state"(next, prev, result)` when it changes.
 */
class Connectivity extends EventEmitter {
  /**
   * @param {{endpoint: string, probeTimeoutMs: number, heartbeatMs: number, probeCacheMs: number, logger: object, curve?: object}} options
   */
  constructor({ endpoint, probeTimeoutMs, heartbeatMs, probeCacheMs, logger, curve }) {
    super();
    this.endpoint = endpoint;
    this.probeTimeoutMs = probeTimeoutMs;
    this.heartbeatMs = heartbeatMs;
    this.probeCacheMs = probeCacheMs;
    this.logger = logger;
    this.curve = curve;
    /** @type {"unknown"|"up"|"down"} */
    this.state = "unknown";
    this._inFlight = null;
    this._last = { at: 0, ok: false, refused: false, reason: "" };
  }

  /**
   * Probe, or share the probe in flight, or reuse a result younger than `maxAgeMs`.
   * @param {{maxAgeMs?: number}} [options]
   * @returns {Promise<{ok: boolean, refused: boolean, reason: string, health?: object, at: number}>}
   */
  probe({ maxAgeMs = this.probeCacheMs } = {}) {
    if (this._inFlight) return this._inFlight;
    if (this._last.at && Date.now() - this._last.at < maxAgeMs) return Promise.resolve(this._last);
    this._inFlight = probeHealth({ endpoint: this.endpoint, timeoutMs: this.probeTimeoutMs, heartbeatMs: this.heartbeatMs, logger: this.logger, curve: this.curve })
      .then((result) => {
        this._inFlight = null;
        this._last = { ...result, at: Date.now() };
        this.set(result.ok ? "up" : "down", this._last);
        return this._last;
      });
    return this._inFlight;
  }

  /** The probe in flight, if any (awaited on shutdown). */
  get inFlight() {
    return this._inFlight;
  }

  /**
   * Record a new state (e.g. "down" when the main socket lost the server).
   * @param {"up"|"down"} next
   * @param {{reason: string, refused?: boolean}} result why
   */
  set(next, result) {
    const prev = this.state;
    if (prev === next) return;
    this.state = next;
    const log = next === "up" ? this.logger.info : this.logger.warn;
    log.call(this.logger, { endpoint: this.endpoint, from: prev, to: next, reason: result.reason }, `expertd ${next}`);
    this.emit("state", next, prev, result);
  }
}

module.exports = { Connectivity, probeHealth };
