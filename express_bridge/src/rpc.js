"use strict";
/**
 * A long-lived, promise-based client for expertd over zerorpc: the calls.
 *
 * Its parts, one module each:
 *   - zerorpc_client.js: the one place a zerorpc.Client is made, and the
 *     caller's deadline (`expertd_timeout_ms`) in each call's header;
 *   - connection.js: the connection that carries every call (zerorpc
 *     multiplexes them), the calls in flight on it, and its retirement;
 *   - probe.js: connectivity ("unknown" | "up" | "down") from `health()`
 *     probes on fresh sockets;
 *   - coalescer.js: concurrent `opinion(name, doc)` calls for one expert
 *     become one `opinions_batch(docs, [name])` call.
 *
 * How failures map to HTTP:
 *   - a call made while the state is not "up" first waits for a probe
 *     (shared: at most one probe is in flight); if it fails: 503;
 *   - a call that times out triggers a fresh probe: server down -> 503,
 *     server up -> 504;
 *   - a ZeroMQ "disconnect" on the connection (the server died, or dropped
 *     us) ends every call in flight on it at once with 503 (their answers can
 *     no longer come) and probes; a probe that finds the connection refused
 *     does the same;
 *   - when the server goes down the connection is retired (closed once its
 *     calls have ended, linger 0) so that requests queued for a dead server
 *     are not replayed to the next one; a new connection is made on demand.
 */

const { EventEmitter } = require("node:events");
const { RemoteError, RpcTimeoutError, ServerUnavailableError, HttpError } = require("./errors");
const { Coalescer } = require("./coalescer");
const { Connection, LOCAL_TIMEOUTS } = require("./connection");
const { Connectivity } = require("./probe");
const { curveOptions } = require("./curve");

/** Promise client of the expertd RPC methods, with connectivity tracking. */
class ExpertdClient extends EventEmitter {
  /**
   * @param {object} options
   * @param {string} options.endpoint ZeroMQ endpoint, e.g. "tcp://127.0.0.1:4242"
   * @param {number} [options.timeoutMs=30000] default per-call timeout (also sent to the server)
   * @param {number} [options.probeTimeoutMs=1000] how long a health probe may take
   * @param {number} [options.heartbeatMs=5000] zerorpc heartbeat interval
   * @param {number} [options.probeCacheMs=250] reuse a probe result this recent
   * @param {{maxBatch?: number, maxBytes?: number, waitMs?: number, inFlight?: number, maxQueue?: number}} [options.coalesce]
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
    this.heartbeatMs = heartbeatMs;
    this.logger = logger || silentLogger;
    this.curve = curveOptions(); // CURVE keys from EXPERTD_SERVER_KEY/EXPERTD_CLIENT_KEY (throws if unusable)
    this.connectivity = new Connectivity({ endpoint, probeTimeoutMs, heartbeatMs, probeCacheMs, logger: this.logger, curve: this.curve });
    this.connectivity.on("state", (next, prev, result) => this._onState(next, prev, result));
    /** Expert names last reported by the server (health() or experts()). */
    this.knownExperts = new Set();
    this.lastHealth = null;
    /** @type {Connection|null} the connection new calls go on */
    this._connection = null;
    /** @type {Set<Connection>} retired connections with calls still in flight */
    this._retired = new Set();
    this._closed = false;
    this.coalescer = new Coalescer({
      ...coalesce,
      timeoutMs,
      call: (method, args, o) => this.call(method, args, o),
      timeoutError: (method, ms) => this._timeoutError(method, ms),
      onBatch: (name, size) => this.emit("batch", name, size),
      keepState: (name) => this.knownExperts.has(name),
    });
  }

  /** "unknown" | "up" | "down": what the last probe (or a lost connection) said. */
  get state() {
    return this.connectivity.state;
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
    const connection = this._acquire();
    const startedAt = Date.now();
    try {
      const result = await connection.invoke(method, args, timeoutMs);
      this._observe(method, result);
      return result;
    } catch (err) {
      if (err instanceof HttpError || err.local) throw err;
      if (LOCAL_TIMEOUTS.has(err.name)) {
        const probe = await this.probe({ maxAgeMs: 0 });
        if (!probe.ok) throw this._unavailable(probe.reason);
        this._checkWedged(connection, startedAt);
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
   * Ask `health()` on a fresh, short-lived socket (see probe.js). Shared by
   * concurrent callers; a result younger than `maxAgeMs` is reused.
   * @param {{maxAgeMs?: number}} [options]
   * @returns {Promise<{ok: boolean, reason: string, health?: object}>}
   */
  async probe(options) {
    const result = await this.connectivity.probe(options);
    if (result.ok) this._observe("health", result.health);
    return result;
  }

  /**
   * Close every socket; pending calls are rejected with 503. Idempotent.
   * @returns {Promise<void>}
   */
  async close() {
    if (this._closed) return;
    this._closed = true;
    const err = new ServerUnavailableError("the bridge is shutting down");
    this.coalescer.rejectQueued(err);
    if (this.connectivity.inFlight) await this.connectivity.inFlight;
    for (const connection of [this._connection, ...this._retired].filter(Boolean)) {
      connection.failPending(err);
      connection.close();
    }
    this._connection = null;
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

  _onState(next, prev, result) {
    if (next === "down" && this._connection) {
      // Requests queued for a dead server must not be replayed to the next one.
      const connection = this._connection;
      this._connection = null;
      // Refused: nothing listens, so no answer can come on the old connection either.
      if (result && result.refused) this._failLost(connection, result.reason);
      this._retire(connection);
    }
    this.emit("state", next, prev);
  }

  /** The connection lost its server: its calls end now with 503, and we find out whether the server is still there. */
  _onDisconnect(connection) {
    if (this._closed) return;
    this.logger.warn({ endpoint: this.endpoint, connection: connection.id, inFlight: connection.pending.size }, "connection to expertd lost");
    if (this._connection === connection) this._connection = null;
    this._failLost(connection, "connection lost");
    this._retire(connection);
    this.connectivity.set("down", { reason: "connection lost" });
    this.probe({ maxAgeMs: 0 });
  }

  _failLost(connection, reason) {
    connection.failPending(new ServerUnavailableError(
      `expertd at ${this.endpoint} went away during the call (${reason}); it was not answered, ask again`));
  }

  _acquire() {
    if (!this._connection) {
      this._connection = new Connection({
        endpoint: this.endpoint,
        timeoutMs: this.timeoutMs,
        heartbeatMs: this.heartbeatMs,
        logger: this.logger,
        curve: this.curve,
        onDisconnect: (c) => this._onDisconnect(c),
      });
    }
    return this._connection;
  }

  /**
   * The server answers probes on a fresh socket, yet this connection's call
   * timed out and it has had no reply since: after two such calls in a row,
   * treat the connection as wedged and replace it.
   */
  _checkWedged(connection, startedAt) {
    if (connection.retired || connection.lastReplyAt >= startedAt) return;
    connection.suspect += 1;
    if (connection.suspect >= 2 && this._connection === connection) {
      this.logger.warn({ endpoint: this.endpoint, connection: connection.id }, "zerorpc client gets no replies; replacing it");
      this._connection = null;
      this._retire(connection);
    }
  }

  _retire(connection) {
    connection.retire();
    for (const old of this._retired) if (old.pending.size === 0) this._retired.delete(old);
    if (connection.pending.size > 0) this._retired.add(connection);
  }
}

const noop = () => {};
const silentLogger = { info: noop, warn: noop, debug: noop, error: noop };

module.exports = { ExpertdClient, LOCAL_TIMEOUTS };
