"use strict";
/**
 * A long-lived, promise-based client for expertd over zerorpc.
 *
 * One zerorpc.Client (one ZeroMQ DEALER socket) carries every call: zerorpc
 * multiplexes concurrent calls on channels, so a pool buys nothing here.
 *
 * The zerorpc client cannot tell "nothing listens" from "slow": both end as
 * TimeoutExpired (or HeartbeatError). This wrapper keeps a connectivity state
 * ("unknown" | "up" | "down") fed by cheap `health()` probes, each on a fresh,
 * short-lived socket with a ZeroMQ monitor, so that a refused connection is
 * seen at once and a silent one after `probeTimeoutMs`:
 *   - a call made while the state is not "up" first waits for a probe
 *     (coalesced: at most one probe is in flight); if it fails: 503;
 *   - a call that times out triggers a fresh probe: server down -> 503,
 *     server up -> 504;
 *   - a ZeroMQ "disconnect" on the main socket triggers a probe at once.
 * When the server goes down the main client is retired (closed, with linger 0,
 * once its in-flight calls have ended) so that requests queued for a dead
 * server are not replayed to the next one; a new client is made on demand.
 *
 * `opinion(name, doc)` goes through a Coalescer (coalescer.js): concurrent
 * calls for one expert become one `opinions_batch(docs, [name])` call, and
 * each caller gets its own answer or error.
 */

const { EventEmitter } = require("node:events");
const zerorpc = require("zerorpc");
const { RemoteError, RpcTimeoutError, ServerUnavailableError, HttpError } = require("./errors");
const { Coalescer } = require("./coalescer");
const { curveOptions, secureClient } = require("./curve");

/** Error names the zerorpc node client makes up itself (not remote errors). */
const LOCAL_TIMEOUTS = new Set(["TimeoutExpired", "HeartbeatError"]);

let nextClientId = 1;

/** Promise client of the expertd RPC methods, with connectivity tracking. */
class ExpertdClient extends EventEmitter {
  /**
   * @param {object} options
   * @param {string} options.endpoint ZeroMQ endpoint, e.g. "tcp://127.0.0.1:4242"
   * @param {number} [options.timeoutMs=30000] default per-call timeout
   * @param {number} [options.probeTimeoutMs=1000] how long a health probe may take
   * @param {number} [options.heartbeatMs=5000] zerorpc heartbeat interval
   * @param {number} [options.probeCacheMs=250] reuse a probe result this recent
   * @param {{maxBatch?: number, maxBytes?: number, waitMs?: number, inFlight?: number}} [options.coalesce]
   *   how `opinion()` calls for one expert are coalesced into `opinions_batch` calls
   *   (see coalescer.js; `{maxBatch: 1}` turns it off). Each call sent emits
   *   `"batch"` (expert name, number of documents).
   * @param {{info: Function, warn: Function, debug: Function}} [options.logger]
   */
  constructor({ endpoint, timeoutMs = 30000, probeTimeoutMs = 1000, heartbeatMs = 5000, probeCacheMs = 250, coalesce = {}, logger } = {}) {
    super();
    if (!endpoint) throw new TypeError("ExpertdClient needs an endpoint");
    this.endpoint = endpoint;
    this.timeoutMs = timeoutMs;
    this.probeTimeoutMs = probeTimeoutMs;
    this.heartbeatMs = heartbeatMs;
    this.probeCacheMs = probeCacheMs;
    this.logger = logger || silentLogger;
    this.curve = curveOptions(); // CURVE keys from EXPERTD_SERVER_KEY/EXPERTD_CLIENT_KEY (throws if unusable)
    /** @type {"unknown"|"up"|"down"} */
    this.state = "unknown";
    /** Expert names last reported by the server (health() or experts()). */
    this.knownExperts = new Set();
    this.lastHealth = null;
    this._entry = null; // { id, client, pending: Map, retired }
    this._retired = new Set();
    this._probe = null; // in-flight probe promise
    this._lastProbe = { at: 0, ok: false, reason: "" };
    this._closed = false;
    this._nextCall = 1;
    this.coalescer = new Coalescer({
      ...coalesce,
      timeoutMs,
      call: (method, args, o) => this.call(method, args, o),
      timeoutError: (method, ms) => this._timeoutError(method, ms),
      onBatch: (name, size) => this.emit("batch", name, size),
      keepState: (name) => this.knownExperts.has(name),
    });
  }

  /**
   * Call a remote method with positional arguments.
   * @param {string} method
   * @param {any[]} [args=[]]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any>} the result, or rejects with an HttpError subclass
   *   (RemoteError, ServerUnavailableError 503, RpcTimeoutError 504)
   */
  async call(method, args = [], { timeoutMs = this.timeoutMs } = {}) {
    if (this._closed) throw new ServerUnavailableError("the bridge is shutting down");
    if (this.state !== "up") {
      const probe = await this.probe();
      if (!probe.ok) throw this._unavailable(probe.reason);
    }
    const entry = this._acquire();
    const startedAt = Date.now();
    try {
      const result = await this._invoke(entry, method, args, timeoutMs);
      this._observe(method, result);
      return result;
    } catch (err) {
      if (err instanceof HttpError || err.local) throw err;
      if (LOCAL_TIMEOUTS.has(err.name)) {
        const probe = await this.probe({ maxAgeMs: 0 });
        if (!probe.ok) throw this._unavailable(probe.reason);
        this._checkPoisoned(entry, startedAt);
        throw new RpcTimeoutError(
          err.name === "HeartbeatError"
            ? `expertd stopped sending heartbeats during ${method}() (${err.message})`
            : `expertd did not answer ${method}() within ${timeoutMs} ms`,
        );
      }
      if (err.name === "ProtocolError") {
        throw new HttpError(502, "ProtocolError", `bad answer from expertd: ${err.message}`);
      }
      throw new RemoteError(err.name, err.message);
    }
  }

  /** `health()` -> {status, experts, uptime_s, pid, version}. @param {{timeoutMs?: number}} [o] */
  health(o) {
    return this.call("health", [], o);
  }

  /** `experts()` -> [{name, version, description, field, metrics, batch}]. */
  experts() {
    return this.call("experts", []);
  }

  /** `stats()` -> per-expert counters. */
  stats() {
    return this.call("stats", []);
  }

  /**
   * `opinion(name, doc)` -> the opinion of one expert. Concurrent calls for the
   * same expert are coalesced into `opinions_batch(docs, [name])` calls (see
   * coalescer.js); each caller still gets its own opinion or its own error.
   * @param {string} name @param {object} doc
   * @param {{bytes?: number}} [options] the document's JSON size, if known
   */
  opinion(name, doc, options) {
    if (this._closed) return Promise.reject(new ServerUnavailableError("the bridge is shutting down"));
    return this.coalescer.opinion(name, doc, options);
  }

  /**
   * `opinions(doc, names)` -> doc with `opinions` (and `errors`) added.
   * @param {object} doc @param {string[]|null} names (null or [] = every expert)
   */
  opinions(doc, names) {
    return this.call("opinions", [doc, names ?? null]);
  }

  /** `batch(name, docs)` -> opinions in order. @param {string} name @param {object[]} docs */
  batch(name, docs) {
    return this.call("batch", [name, docs]);
  }

  /**
   * Ask `health()` on a fresh, short-lived socket. Coalesced: concurrent
   * callers share one probe; a result younger than `maxAgeMs` is reused.
   * @param {{maxAgeMs?: number}} [options]
   * @returns {Promise<{ok: boolean, reason: string, health?: object}>}
   */
  probe({ maxAgeMs = this.probeCacheMs } = {}) {
    if (this._probe) return this._probe;
    if (this._lastProbe.at && Date.now() - this._lastProbe.at < maxAgeMs) {
      return Promise.resolve(this._lastProbe);
    }
    this._probe = this._runProbe().then((result) => {
      this._probe = null;
      this._lastProbe = { ...result, at: Date.now() };
      this._setState(result.ok ? "up" : "down", result.reason);
      if (result.ok) this._observe("health", result.health);
      return this._lastProbe;
    });
    return this._probe;
  }

  /**
   * Close every socket; pending calls are rejected with 503. Idempotent.
   * @returns {Promise<void>}
   */
  async close() {
    if (this._closed) return;
    this._closed = true;
    this.coalescer.rejectQueued(new ServerUnavailableError("the bridge is shutting down"));
    if (this._probe) await this._probe;
    for (const entry of [this._entry, ...this._retired].filter(Boolean)) {
      for (const settle of entry.pending.values()) {
        settle(new ServerUnavailableError("the bridge is shutting down"));
      }
      this._closeEntry(entry);
    }
    this._entry = null;
    this._retired.clear();
  }

  // -- internals --------------------------------------------------------------

  _unavailable(reason) {
    return new ServerUnavailableError(`expertd at ${this.endpoint} is not answering${reason ? ` (${reason})` : ""}`);
  }

  /** The error of a call that got no answer within `timeoutMs`: 503 if a fresh probe fails, else 504. */
  async _timeoutError(method, timeoutMs) {
    const probe = await this.probe({ maxAgeMs: 0 });
    if (!probe.ok) return this._unavailable(probe.reason);
    return new RpcTimeoutError(`expertd did not answer ${method}() within ${timeoutMs} ms`);
  }

  _observe(method, result) {
    if (method === "health" && result && Array.isArray(result.experts)) {
      this.knownExperts = new Set(result.experts.map(String));
      this.lastHealth = result;
    } else if (method === "experts" && Array.isArray(result)) {
      this.knownExperts = new Set(result.map((e) => String(e && e.name)));
    }
  }

  _setState(next, reason) {
    const prev = this.state;
    if (prev === next) return;
    this.state = next;
    if (next === "down" && this._entry) {
      // Requests queued for a dead server must not be replayed to the next one.
      this._retire(this._entry);
      this._entry = null;
    }
    const log = next === "up" ? this.logger.info : this.logger.warn;
    log.call(this.logger, { endpoint: this.endpoint, from: prev, to: next, reason }, `expertd ${next}`);
    this.emit("state", next, prev);
  }

  _newZerorpcClient(timeoutMs) {
    // zerorpc's own timer takes whole seconds; ours (ms) fires first, its own is a backstop.
    const client = new zerorpc.Client({ timeout: Math.ceil(timeoutMs / 1000) + 2, heartbeatInterval: this.heartbeatMs });
    client.on("error", (err) => this.logger.warn({ err: String(err) }, "zerorpc socket error"));
    secureClient(client, this.curve);
    return client;
  }

  _acquire() {
    if (this._entry) return this._entry;
    const client = this._newZerorpcClient(this.timeoutMs);
    const entry = { id: nextClientId++, client, pending: new Map(), retired: false, lastReplyAt: 0, suspect: 0 };
    const zmqSocket = client._socket && client._socket._zmqSocket;
    if (zmqSocket && typeof zmqSocket.monitor === "function") {
      try {
        zmqSocket.monitor();
        zmqSocket.on("disconnect", () => {
          if (entry.retired || this._closed) return;
          this.logger.debug({ endpoint: this.endpoint }, "zmq disconnect; probing");
          this.probe({ maxAgeMs: 0 });
        });
      } catch (err) {
        this.logger.debug({ err: String(err) }, "zmq monitor unavailable");
      }
    }
    client.connect(this.endpoint);
    this._entry = entry;
    return entry;
  }

  /**
   * The server answers probes on a fresh socket, yet this client's call timed
   * out and it has had no reply since: after two such calls in a row, treat
   * the client as wedged and replace it.
   */
  _checkPoisoned(entry, startedAt) {
    if (entry.retired || entry.lastReplyAt >= startedAt) return;
    entry.suspect += 1;
    if (entry.suspect >= 2 && this._entry === entry) {
      this.logger.warn({ endpoint: this.endpoint, client: entry.id }, "zerorpc client gets no replies; replacing it");
      this._entry = null;
      this._retire(entry);
    }
  }

  _retire(entry) {
    entry.retired = true;
    if (entry.pending.size === 0) this._closeEntry(entry);
    else this._retired.add(entry);
  }

  _closeEntry(entry) {
    this._retired.delete(entry);
    try {
      if (!entry.client.closed()) entry.client.close(0);
    } catch (err) {
      this.logger.debug({ err: String(err) }, "closing zerorpc client");
    }
  }

  _invoke(entry, method, args, timeoutMs) {
    return new Promise((resolve, reject) => {
      const id = this._nextCall++;
      let timer = null;
      const settle = (err, result) => {
        if (!entry.pending.has(id)) return;
        entry.pending.delete(id);
        clearTimeout(timer);
        if (!err || !LOCAL_TIMEOUTS.has(err.name)) {
          entry.lastReplyAt = Date.now();
          entry.suspect = 0;
        }
        if (entry.retired && entry.pending.size === 0) this._closeEntry(entry);
        if (err) reject(err);
        else resolve(result);
      };
      entry.pending.set(id, settle);
      timer = setTimeout(() => {
        const err = new Error(`Timeout after ${timeoutMs}ms`);
        err.name = "TimeoutExpired";
        settle(err);
      }, timeoutMs);
      try {
        entry.client.invoke({ timeout: Math.ceil(timeoutMs / 1000) + 2 }, method, ...args, (err, result) => settle(err, result));
      } catch (err) {
        err.local = true; // e.g. an argument msgpack cannot encode: our bug, not the server's
        settle(err);
      }
    });
  }

  _runProbe() {
    return new Promise((resolve) => {
      let client;
      let done = false;
      let timer = null;
      const finish = (ok, reason, health) => {
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
        resolve({ ok, reason, health });
      };
      try {
        client = this._newZerorpcClient(this.probeTimeoutMs);
        const zmqSocket = client._socket && client._socket._zmqSocket;
        if (zmqSocket && typeof zmqSocket.monitor === "function") {
          zmqSocket.monitor();
          // A refused or dropped connection: nothing listens at the endpoint.
          zmqSocket.on("connect_retry", () => finish(false, "connection refused"));
        }
        timer = setTimeout(() => finish(false, `no answer to health() within ${this.probeTimeoutMs} ms`), this.probeTimeoutMs);
        client.connect(this.endpoint);
        client.invoke("health", (err, res) => {
          if (err) finish(false, `health() failed: ${err.name}: ${err.message}`);
          else if (!res || res.status !== "ok") finish(false, `health() says ${JSON.stringify(res && res.status)}`);
          else finish(true, "", res);
        });
      } catch (err) {
        finish(false, `cannot connect: ${err.message}`);
      }
    });
  }
}

const noop = () => {};
const silentLogger = { info: noop, warn: noop, debug: noop, error: noop };

module.exports = { ExpertdClient, LOCAL_TIMEOUTS };
