"use strict";
/**
 * One connection to expertd: a zerorpc client (one ZeroMQ DEALER socket),
 * the calls in flight on it, the worker behind it, and its retirement.
 *
 * zerorpc multiplexes concurrent calls on channels, so one connection can
 * carry any number of calls (the pool, pool.js, keeps a few of them because
 * servers balance per connection). Its calls are lost for good when the TCP connection drops: the
 * server's ROUTER routes each reply by the identity of the connection that
 * brought the request, and a reconnected DEALER gets a new identity. So a
 * ZeroMQ "disconnect" on this socket fails every call in flight at once
 * (`onDisconnect` decides with what error), instead of leaving them to time out.
 *
 * A retired connection takes no new calls and is closed (linger 0, so that
 * requests queued for a dead server are not replayed to the next one) once
 * its last call has ended.
 */

const { newZerorpcClient, invokeWithHeader, deadlineHeader } = require("./zerorpc_client");
const { METHOD } = require("./spec");

/** Error names the zerorpc node client makes up itself (not remote errors). */
const LOCAL_TIMEOUTS = new Set(["TimeoutExpired", "HeartbeatError"]);

let nextConnectionId = 1;
let nextCallId = 1;

/** A zerorpc client connected to expertd, with its calls in flight. */
class Connection {
  /**
   * @param {object} options
   * @param {string} options.endpoint
   * @param {number} options.timeoutMs default call timeout (for zerorpc's backstop timer)
   * @param {number} options.heartbeatMs
   * @param {{warn: Function, debug: Function}} options.logger
   * @param {object} [options.curve] CURVE socket options (curve.js)
   * @param {(connection: Connection) => void} [options.onDisconnect] the socket lost its
   *   peer while this connection was in use or still had calls in flight (once per drop)
   */
  constructor({ endpoint, timeoutMs, heartbeatMs, logger, curve, onDisconnect = () => {} }) {
    this.id = nextConnectionId++;
    this.endpoint = endpoint;
    this.logger = logger;
    this.retired = false;
    /** Date.now() of the last reply (or remote error) on this connection. */
    this.lastReplyAt = 0;
    /** Timed-out calls in a row with no reply since they started. */
    this.suspect = 0;
    /** Calls sent on this connection so far. */
    this.calls = 0;
    /** @type {{pid: number, worker: number|null, versions: object|null}|null} the worker behind it, once its health() answered (pool.js) */
    this.peer = null;
    /** @type {Map<number, (err: any, result?: any) => void>} */
    this.pending = new Map();
    /** @type {Promise<boolean>|null} the ping in flight (see `ping`) */
    this._ping = null;
    this.client = newZerorpcClient({ timeoutMs, heartbeatMs, logger, curve });
    const zmqSocket = this.client._socket && this.client._socket._zmqSocket;
    if (zmqSocket && typeof zmqSocket.monitor === "function") {
      try {
        zmqSocket.monitor();
        zmqSocket.on("disconnect", () => {
          // A retired connection still ends its calls in flight at once: a
          // retired one is taken out of the pool, not out of use.
          if (!this.retired || this.pending.size > 0) onDisconnect(this);
        });
      } catch (err) {
        logger.debug({ err: String(err) }, "zmq monitor unavailable");
      }
    }
    this.client.connect(endpoint);
  }

  /**
   * Call `method(...args)`, telling the server (header) how long we wait.
   * Rejects with the zerorpc error (name TimeoutExpired after `timeoutMs`),
   * or with an error marked `local` when the call could not even be sent.
   * @param {string} method @param {any[]} args @param {number} timeoutMs
   * @param {Record<string, any>} [header] more header keys (the trace context, trace_context.js)
   * @returns {Promise<any>}
   */
  invoke(method, args, timeoutMs, header) {
    return new Promise((resolve, reject) => {
      const id = nextCallId++;
      let timer = null;
      const settle = (err, result) => {
        if (!this.pending.has(id)) return;
        this.pending.delete(id);
        clearTimeout(timer);
        if (!err || !LOCAL_TIMEOUTS.has(err.name)) {
          this.lastReplyAt = Date.now();
          this.suspect = 0;
        }
        // Closed on a later turn: never from inside the socket's own callbacks.
        if (this.retired && this.pending.size === 0) setImmediate(() => this.close());
        if (err) reject(err);
        else resolve(result);
      };
      this.pending.set(id, settle);
      this.calls += 1;
      timer = setTimeout(() => {
        const err = new Error(`Timeout after ${timeoutMs}ms`);
        err.name = "TimeoutExpired";
        settle(err);
      }, timeoutMs);
      try {
        invokeWithHeader(this.client, header ? { ...deadlineHeader(timeoutMs), ...header } : deadlineHeader(timeoutMs), method, args, { timeoutMs }, (err, result) => settle(err, result));
      } catch (err) {
        err.local = true; // e.g. an argument msgpack cannot encode: our bug, not the server's
        settle(err);
      }
    });
  }

  /**
   * Does the peer of this connection still answer? One `health()` call on this
   * very connection (so behind a balancer it reaches the same worker), shared
   * by concurrent askers, not counted among the connection's calls. Any reply,
   * an error one included (a draining worker answers `ShuttingDown`), is an
   * answer; no reply within `timeoutMs` is none.
   * @param {number} timeoutMs
   * @returns {Promise<boolean>} whether the peer answered
   */
  ping(timeoutMs) {
    if (this._ping) return this._ping;
    this._ping = new Promise((resolve) => {
      let done = false;
      const finish = (answered) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this._ping = null;
        if (answered) this.lastReplyAt = Date.now();
        resolve(answered);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      try {
        invokeWithHeader(this.client, deadlineHeader(timeoutMs), METHOD.health, [], { timeoutMs }, (err) => finish(!err || !LOCAL_TIMEOUTS.has(err.name)));
      } catch {
        finish(false); // the socket is closed
      }
    });
    return this._ping;
  }

  /**
   * End every call in flight with `err` (their answers can no longer come).
   * @param {Error} err
   * @returns {number} how many calls were ended
   */
  failPending(err) {
    const settles = [...this.pending.values()];
    for (const settle of settles) settle(err);
    return settles.length;
  }

  /** Take no new calls; close once the calls in flight have ended. */
  retire() {
    this.retired = true;
    if (this.pending.size === 0) setImmediate(() => this.close());
  }

  /** Close the socket now (linger 0). Idempotent. */
  close() {
    this.retired = true;
    try {
      if (!this.client.closed()) this.client.close(0);
    } catch (err) {
      this.logger.debug({ err: String(err) }, "closing zerorpc client");
    }
  }
}

module.exports = { Connection, LOCAL_TIMEOUTS };
