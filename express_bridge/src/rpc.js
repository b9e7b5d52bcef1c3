"use strict";
/**
 * A long-lived, promise-based client for expertd over zerorpc: the calls.
 *
 * Its parts, one module each:
 *   - zerorpc_client.js: the one place a zerorpc.Client is made, and the
 *     caller's deadline (`expertd_timeout_ms`) in each call's header;
 *   - connection.js: one connection (zerorpc multiplexes calls on it), the
 *     calls in flight on it, and its retirement;
 *   - pool.js: the few connections calls go on (servers balance per
 *     connection), each call on the least busy one;
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
 *   - a call that has had no reply on its connection for half of
 *     `probeTimeoutMs` pings the worker behind that connection (see
 *     `_watch`): if it does not answer (a stopped or hung process, a host
 *     gone without a reset) the call ends in 503 within about twice
 *     `probeTimeoutMs`, not after zerorpc's two missed heartbeats (10 s);
 *   - a ZeroMQ "disconnect" on a connection (its worker died, or dropped
 *     us) ends every call in flight on it at once (their answers can no
 *     longer come), takes it out of the pool and probes;
 *   - a failure the error catalogue marks retryable is asked again on
 *     another connection within the call's own deadline (see `_retry`): a
 *     lost connection once a fresh probe finds the server answering (else
 *     503), `ShuttingDown` on a new connection (the draining one leaves the
 *     pool), `Overloaded` only on a connection known to reach another worker;
 *   - when the server goes down every connection is retired (closed once its
 *     calls have ended, linger 0) so that requests queued for a dead server
 *     are not replayed to the next one; new connections are made on demand.
 */

const { EventEmitter } = require("node:events");
const { RemoteError, RpcTimeoutError, ServerUnavailableError, HttpError } = require("./errors");
const { ERROR, ERRORS, METHOD, healthFields } = require("./spec");

/** The field of health() that lists the experts (checked against expertd/protocol.json at load). */
const [HEALTH_EXPERTS] = healthFields("experts");
const { mayAskAgain, BRIDGE, MAX_ATTEMPTS, MIN_RETRY_MS } = require("./retry");
const { Coalescer } = require("./coalescer");
const { Connection, LOCAL_TIMEOUTS } = require("./connection");
const { ConnectionPool, DEFAULT_SIZE } = require("./pool");
const { Connectivity } = require("./probe");
const { curveOptions } = require("./curve");
const { traceHeader } = require("./trace_context");
const { records, startSpan } = require("./tracing");

/** Promise client of the expertd RPC methods, with connectivity tracking. */
class ExpertdClient extends EventEmitter {
  /**
   * @param {object} options
   * @param {string} options.endpoint ZeroMQ endpoint (see spec.js DEFAULT_ENDPOINT)
   * @param {number} [options.timeoutMs=30000] default per-call timeout (also sent to the server)
   * @param {number} [options.probeTimeoutMs=1000] how long a health probe may take
   * @param {number} [options.heartbeatMs=5000] zerorpc heartbeat interval
   * @param {number} [options.probeCacheMs=250] reuse a probe result this recent
   * @param {{maxBatch?: number, maxBytes?: number, waitMs?: number, inFlight?: number, maxQueue?: number}} [options.coalesce]
   *   how `opinion()` calls for one expert are coalesced into `opinions_batch` calls
   *   (see coalescer.js; `{maxBatch: 1}` turns it off). Each call sent emits
   *   `"batch"` (expert name, number of documents).
   * @param {number} [options.connections=4] connections in the pool (EXPERTD_CONNECTIONS; see pool.js)
   * @param {{info: Function, warn: Function, debug: Function}} [options.logger]
   */
  constructor({ endpoint, timeoutMs = 30000, probeTimeoutMs = 1000, heartbeatMs = 5000, probeCacheMs = 250, coalesce = {}, connections = DEFAULT_SIZE, logger } = {}) {
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
    /** The connections calls go on (pool.js). */
    this.pool = new ConnectionPool({
      size: connections,
      logger: this.logger,
      connect: () => this._newConnection(),
      hello: (c) => c.invoke(METHOD.health, [], this.timeoutMs).then((h) => {
        this._observe(METHOD.health, h);
        return h;
      }),
    });
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
   * @param {{timeoutMs?: number, trace?: object, links?: object[]}} [options] `trace`: the
   *   trace context the server's work hangs under (trace_context.js), `links`: the
   *   requests a coalesced call serves
   * @returns {Promise<any>} the result, or rejects with an HttpError subclass
   *   (RemoteError, ServerUnavailableError 503, RpcTimeoutError 504)
   */
  async call(method, args = [], { timeoutMs = this.timeoutMs, trace = null, links = null } = {}) {
    const span = trace && records(trace) ? startSpan(`rpc ${method}`, {
      parent: trace, kind: "client", links: links || [],
      attributes: { "rpc.system": "zerorpc", "rpc.method": method, "expertd.batch_size": links && links.length > 0 ? links.length : undefined },
    }) : null;
    if (!span) return this._call(method, args, timeoutMs, traceHeader(trace, links));
    try {
      return await this._call(method, args, timeoutMs, traceHeader(span.context, links));
    } catch (err) {
      span.fail(err.name || "Error", err.message);
      throw err;
    } finally {
      span.end();
    }
  }

  /** `call` once its trace header is made. */
  async _call(method, args, timeoutMs, header) {
    if (this._closed) throw new ServerUnavailableError("the bridge is shutting down");
    const deadline = Date.now() + timeoutMs;
    if (this.state !== "up") {
      const probe = await this.probe();
      if (!probe.ok) throw this._unavailable(probe.reason);
    }
    const attempt = { method, deadline, number: 0, tried: new Set(), refusedBy: new Set(), drained: 0, lastError: null };
    for (;;) {
      attempt.number += 1;
      const connection = this.pool.pick({ avoid: attempt.tried, avoidPeers: attempt.refusedBy });
      if (!connection) throw attempt.lastError; // every connection was tried (a retry only)
      try {
        const result = await this._callOn(connection, method, args, Math.max(1, deadline - Date.now()), timeoutMs, header);
        this._observe(method, result);
        return result;
      } catch (err) {
        const next = await this._retry(err, connection, attempt);
        if (next instanceof Error) throw next;
      }
    }
  }

  /** `health()` -> {status, experts, uptime_s, pid, version}. @param {{timeoutMs?: number}} [o] */
  health(o) {
    return this.call(METHOD.health, [], o);
  }

  /** `experts()` -> [{name, version, description, field, metrics, batch}]. */
  experts() {
    return this.call(METHOD.experts, []);
  }

  /** `stats()` -> per-expert counters. */
  stats() {
    return this.call(METHOD.stats, []);
  }

  /**
   * `opinion(name, doc)` -> the opinion of one expert. Concurrent calls for the
   * same expert are coalesced into `opinions_batch(docs, [name])` calls (see
   * coalescer.js); each caller still gets its own opinion or its own error.
   * @param {string} name @param {object} doc
   * @param {{bytes?: number, trace?: object}} [options] the document's JSON size, if known;
   *   the request's trace context
   */
  opinion(name, doc, options) {
    if (this._closed) return Promise.reject(new ServerUnavailableError("the bridge is shutting down"));
    return this.coalescer.opinion(name, doc, options);
  }

  /**
   * `opinions(doc, names[, options])` -> doc with `opinions` (and `errors`, `recomputed`) added.
   * @param {object} doc @param {string[]|null} names (null or [] = every expert)
   * @param {object} [methodOptions] the method's options, e.g. `{include_needs: false}`
   * @param {{trace?: object}} [callOptions] the call's own, e.g. the request's trace context
   */
  opinions(doc, names, methodOptions, callOptions) {
    return this.call(METHOD.opinions, methodOptions ? [doc, names ?? null, methodOptions] : [doc, names ?? null], callOptions);
  }

  /** `batch(name, docs)` -> opinions in order. @param {string} name @param {object[]} docs */
  batch(name, docs, options) {
    return this.call(METHOD.batch, [name, docs], options);
  }

  /**
   * Ask `health()` on a fresh, short-lived socket (see probe.js). Shared by
   * concurrent callers; a result younger than `maxAgeMs` is reused.
   * @param {{maxAgeMs?: number}} [options]
   * @returns {Promise<{ok: boolean, reason: string, health?: object}>}
   */
  async probe(options) {
    const result = await this.connectivity.probe(options);
    if (result.ok) this._observe(METHOD.health, result.health);
    return result;
  }

  /**
   * Call `method(...args)` once on each server process this client's connections reached
   * (one connection per peer pid; a connection whose peer is not known yet counts as its own),
   * e.g. to gather what each worker of `expertd serve --workers N` keeps in memory.
   * @param {string} method
   * @param {any[]} [args=[]]
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any[]>} the answers of the peers that answered (failures are left out)
   */
  async callEachPeer(method, args = [], { timeoutMs = this.timeoutMs } = {}) {
    if (this._closed) return [];
    const seen = new Set();
    const picked = [];
    for (const connection of this.pool.all()) {
      const pid = connection.peer ? connection.peer.pid : null;
      if (pid !== null && pid !== undefined) {
        if (seen.has(pid)) continue;
        seen.add(pid);
      }
      picked.push(connection);
    }
    if (picked.length === 0) return [await this.call(method, args, { timeoutMs })]; // none yet: it dials one
    const answers = await Promise.allSettled(picked.map((c) => this._callOn(c, method, args, timeoutMs, timeoutMs, {})));
    return answers.filter((a) => a.status === "fulfilled").map((a) => a.value);
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
    const connections = this.pool.all();
    this.pool.removeAll();
    for (const connection of connections) {
      connection.failPending(err);
      connection.close();
    }
  }

  // -- internals --------------------------------------------------------------

  /** One attempt of a call on `connection`, its failure as an HttpError. */
  async _callOn(connection, method, args, remainingMs, timeoutMs, header) {
    const startedAt = Date.now();
    const watchdog = this._watch(connection);
    try {
      return await Promise.race([connection.invoke(method, args, remainingMs, header), watchdog.gone]);
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
    } finally {
      watchdog.stop();
    }
  }

  /**
   * Watch a call on `connection`: each time it has waited half of
   * `probeTimeoutMs` with no reply on its connection for as long, ping the
   * connection's peer (`Connection#ping`: a `health()` on that very
   * connection, so behind a balancer it asks the worker that has the call).
   * A peer that does not answer within one and a half `probeTimeoutMs` (a
   * stopped or hung process, a host gone without a reset; a live server's
   * loop busy that long on a huge message looks the same) is not going to
   * answer the call either: `gone` rejects
   * with a 503, the connection leaves the pool, and a fresh probe tells the
   * next requests whether any server answers. A peer that answers (a long
   * computation on a live worker) is looked at again a heartbeat later.
   * @param {import("./connection").Connection} connection
   * @returns {{gone: Promise<never>, stop: () => void}}
   */
  _watch(connection) {
    const quietMs = Math.max(1, Math.round(this.connectivity.probeTimeoutMs / 2));
    const pingMs = this.connectivity.probeTimeoutMs + quietMs; // a stopped server: 503 after quietMs + pingMs
    let timer = null;
    let stopped = false;
    const gone = new Promise((resolve, reject) => {
      const look = async () => {
        if (stopped) return;
        let nextMs = quietMs;
        if (Date.now() - connection.lastReplyAt >= quietMs) {
          const answered = await connection.ping(pingMs);
          if (stopped) return;
          if (!answered) {
            this.pool.remove(connection);
            this.probe({ maxAgeMs: 0 });
            reject(this._unavailable(`no answer to health() within ${pingMs} ms on the connection of this call`));
            return;
          }
          nextMs = this.heartbeatMs;
        }
        timer = setTimeout(look, nextMs);
      };
      timer = setTimeout(look, quietMs);
    });
    gone.catch(() => {}); // settled after the call ended: nobody waits for it
    return {
      gone,
      stop: () => {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  /**
   * After a failed attempt: the error to give the caller, or `true` to try
   * again (on another connection). Only a failure the catalogue lets ask
   * again (`mayAskAgain`: retryable, and for a method that changes state,
   * such as learn, only a refusal the server gave before running it) is tried
   * again, only while the call's deadline leaves time, and at most
   * MAX_ATTEMPTS times:
   *   - the connection was lost before the answer (`err.lost`): again once a
   *     fresh probe finds the server answering (else 503);
   *   - `ShuttingDown`: the worker behind the connection drains, so the
   *     connection leaves the pool and the call goes on another, one known to
   *     reach another worker if the pool has one (else on a new connection,
   *     after a short backoff from the second time on: e.g. a balancer that
   *     still sends new connections to a draining machine);
   *   - `Overloaded`: only on a connection known to reach another worker
   *     (never again to the worker that said it: no retry storm);
   *   - anything else retryable (a timeout before the deadline): on another connection.
   */
  async _retry(err, connection, attempt) {
    attempt.tried.add(connection);
    attempt.lastError = err;
    if (this._closed || err.serverDown || attempt.number >= MAX_ATTEMPTS) return err;
    if (!mayAskAgain(attempt.method, err.name, Boolean(err.remote) && !err.lost)) return err;
    const timeLeft = () => attempt.deadline - Date.now();
    if (timeLeft() < MIN_RETRY_MS) return err;
    if (err.lost) {
      const probe = await this.probe({ maxAgeMs: 0 });
      if (!probe.ok) return this._unavailable(probe.reason);
    } else if (err.remote && err.name === ERROR.ShuttingDown) {
      this.pool.remove(connection);
      if (connection.peer) attempt.refusedBy.add(connection.peer.id);
      attempt.drained += 1;
      if (attempt.drained > 1 && !this.pool.reachesAnother({ avoid: attempt.tried, avoidPeers: attempt.refusedBy })) {
        const backoffMs = BRIDGE.pauseMs(attempt.drained - 2);
        if (timeLeft() < backoffMs + MIN_RETRY_MS) return err;
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
      }
    } else if (err.remote && err.name === ERROR.Overloaded) {
      if (!connection.peer) return err;
      attempt.refusedBy.add(connection.peer.id);
      if (!this.pool.reachesAnother({ avoid: attempt.tried, avoidPeers: attempt.refusedBy })) return err;
    }
    if (this._closed || timeLeft() < MIN_RETRY_MS) return err;
    this.logger.debug({ method: attempt.method, error: err.name, attempt: attempt.number, connection: connection.id }, "asking again on another connection");
    this.emit("retry", attempt.method, err.name);
    return true;
  }

  /** 503: a probe found the server not answering (never asked again: the probe has just said so); says what to do (the spec's hint). */
  _unavailable(reason) {
    const err = new ServerUnavailableError(`expertd at ${this.endpoint} is not answering${reason ? ` (${reason})` : ""}; ${UNAVAILABLE_HINT}`);
    err.serverDown = true;
    return err;
  }

  /** The error of a call that got no answer within `timeoutMs`: 503 if a fresh probe fails, else 504. */
  async _timeoutError(method, timeoutMs) {
    const probe = await this.probe({ maxAgeMs: 0 });
    if (!probe.ok) return this._unavailable(probe.reason);
    return new RpcTimeoutError(`expertd did not answer ${method}() within ${timeoutMs} ms`);
  }

  _observe(method, result) {
    if (method === METHOD.health && result && Array.isArray(result[HEALTH_EXPERTS])) {
      this.knownExperts = new Set(result[HEALTH_EXPERTS].map(String));
      this.lastHealth = result;
    } else if (method === METHOD.experts && Array.isArray(result)) {
      this.knownExperts = new Set(result.map((e) => String(e && e.name)));
    }
  }

  _onState(next, prev, result) {
    if (next === "down") {
      // Requests queued for a dead server must not be replayed to the next one.
      const connections = this.pool.all();
      this.pool.removeAll();
      // Refused: nothing listens, so no answer can come on the old connections either.
      if (result && result.refused) for (const c of connections) this._failLost(c, result.reason);
    } else if (next === "up" && !this._closed) {
      this.pool.fill(); // connected (and each worker known) before the first call needs it
    }
    this.emit("state", next, prev);
  }

  /**
   * A connection lost its worker: it leaves the pool, its calls end now (each
   * is asked again elsewhere if it may be, see `_retry`), and a fresh probe
   * finds out whether the server is still there.
   */
  _onDisconnect(connection) {
    if (this._closed) return;
    this.logger.warn({ endpoint: this.endpoint, connection: connection.id, pid: connection.peer && connection.peer.pid, inFlight: connection.pending.size }, "connection to expertd lost");
    this.pool.lost(connection);
    this._failLost(connection, "connection lost");
    this.probe({ maxAgeMs: 0 });
  }

  _failLost(connection, reason) {
    const err = new ServerUnavailableError(
      `expertd at ${this.endpoint} went away during the call (${reason}); it was not answered, ask again`);
    err.lost = true;
    connection.failPending(err);
  }

  _newConnection() {
    return new Connection({
      endpoint: this.endpoint,
      timeoutMs: this.timeoutMs,
      heartbeatMs: this.heartbeatMs,
      logger: this.logger,
      curve: this.curve,
      onDisconnect: (c) => this._onDisconnect(c),
    });
  }

  /**
   * The server answers probes on a fresh socket, yet this connection's call
   * timed out and it has had no reply since: after two such calls in a row,
   * treat the connection as wedged and replace it.
   */
  _checkWedged(connection, startedAt) {
    if (connection.retired || connection.lastReplyAt >= startedAt) return;
    connection.suspect += 1;
    if (connection.suspect >= 2 && this.pool.active.includes(connection)) {
      this.logger.warn({ endpoint: this.endpoint, connection: connection.id }, "zerorpc client gets no replies; replacing it");
      this.pool.remove(connection);
    }
  }
}

/** What to do when no server answers (expertd/protocol.json). */
const UNAVAILABLE_HINT = ERRORS[ERROR.ServerUnavailable].hint;

const noop = () => {};
const silentLogger = { info: noop, warn: noop, debug: noop, error: noop };

module.exports = { ExpertdClient, LOCAL_TIMEOUTS };
