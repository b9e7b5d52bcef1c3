"use strict";
/**
 * A small pool of connections to expertd, and which one a call goes on.
 *
 * `expertd serve --workers N` (and HAProxy, and a Kubernetes Service) balance
 * per CONNECTION: the kernel (or the balancer) gives each new TCP connection
 * to one worker, and every call on it goes there. One connection would put
 * the bridge's whole load on one worker, so the bridge keeps `size` of them
 * and sends each call to the least busy one.
 *
 * - Each new connection first asks `health()` on itself (its "hello"), to
 *   learn the worker behind it (its peer): its `instance` id (unique across
 *   machines, where pids repeat), pid, and how many workers the server has.
 * - "Least busy" is counted per peer: the calls in flight on every
 *   connection to that worker, then on the connection itself. Two
 *   connections that reached the same worker therefore do not draw twice its
 *   share; a connection whose hello has not come back counts as its own peer.
 * - A connection whose peer duplicates another connection's is redialled
 *   (at most `redials` times per slot) while the pool reaches fewer workers
 *   than the server says it has (health()'s `workers`, up to the pool's
 *   size; from a server that does not say, fewer than it has connections):
 *   with 4 connections on 2 workers the kernel's random choice leaves one
 *   worker without a connection 1 time in 8; the redials make that rare.
 *   Redialling is cheap (a connect and one health()). Against one
 *   single-process server nothing is redialled.
 * - While the pool still lacks a worker, one connection of the most shared
 *   worker is redialled now and then (every 1 s; from a server that does not
 *   say its `workers`, after 1 s, then 2, 4 ... up to 60 s), and again after
 *   a connection is lost: so a worker that was restarted, or started by a
 *   reload, gets connections again.
 * - A connection that is lost, or whose worker drains, leaves the pool (its
 *   calls in flight still end on it) and a new one takes its slot on the
 *   next call.
 */

const { healthFields } = require("./spec");

/** The fields of health() read by the pool (checked against expertd/protocol.json at load). */
const HEALTH_READ = healthFields("pid", "instance", "worker", "versions", "workers");

/** Connections a pool keeps by default (EXPERTD_CONNECTIONS): see express_bridge/README.md, "The connection pool". */
const DEFAULT_SIZE = 4;
/** How many times a slot is redialled when its connection reached a worker another connection already has. */
const DEFAULT_REDIALS = 2;
/** The spreading redial's first and longest delays (ms). */
const SPREAD_FIRST_MS = 1000;
const SPREAD_MAX_MS = 60000;

/** The connections new calls may go on, and the choice among them. */
class ConnectionPool {
  /**
   * @param {object} options
   * @param {number} [options.size=4] connections to keep
   * @param {number} [options.redials=2] redials of a slot whose peer duplicates another's
   * @param {(slot: {redials: number}) => import("./connection").Connection} options.connect
   *   make a new connection (the pool owns it from then on)
   * @param {(connection: import("./connection").Connection) => Promise<object>} options.hello
   *   ask health() on that connection; resolves to the health answer
   * @param {{debug: Function, info: Function}} options.logger
   */
  constructor({ size = DEFAULT_SIZE, redials = DEFAULT_REDIALS, connect, hello, logger }) {
    if (!Number.isInteger(size) || size < 1) throw new TypeError(`pool size must be an integer >= 1, got ${size}`);
    this.size = size;
    this.redials = redials;
    this._connect = connect;
    this._hello = hello;
    this.logger = logger;
    /** @type {import("./connection").Connection[]} the connections new calls go on */
    this.active = [];
    /** @type {Set<import("./connection").Connection>} left the pool, calls still in flight */
    this.retired = new Set();
    /** Connections made since the pool started (replacements and redials included). */
    this.dialled = 0;
    this._spreadMs = SPREAD_FIRST_MS;
    this._spreadTimer = null;
  }

  /**
   * The connection for the next call: fills empty slots, then picks the least
   * busy (per peer, then per connection) of those not excluded.
   * @param {{avoid?: Set<object>, avoidPeers?: Set<number>}} [exclude]
   *   connections already tried by this call, and workers (pids) that refused it
   *   (Overloaded, ShuttingDown): connections known to reach another worker come first
   * @returns {import("./connection").Connection|null} null when every connection is excluded
   */
  pick({ avoid, avoidPeers } = {}) {
    this.fill();
    const load = new Map();
    for (const c of this.active) load.set(peerKey(c), (load.get(peerKey(c)) || 0) + c.pending.size);
    const candidates = this.active.filter((c) => !(avoid && avoid.has(c)) && !(c.peer && avoidPeers && avoidPeers.has(c.peer.id)));
    // Away from a worker that refused the call: to one known to be another, if the pool has one.
    const known = avoidPeers && avoidPeers.size ? candidates.filter((c) => c.peer) : [];
    let best = null;
    let bestScore = null;
    for (const c of known.length ? known : candidates) {
      const score = [load.get(peerKey(c)), c.pending.size, c.calls];
      if (!best || lessThan(score, bestScore)) {
        best = c;
        bestScore = score;
      }
    }
    return best;
  }

  /**
   * Whether some connection not in `avoid` is known to reach a worker not in `avoidPeers`.
   * @param {{avoid?: Set<object>, avoidPeers?: Set<number>}} exclude
   */
  reachesAnother({ avoid, avoidPeers }) {
    return this.active.some((c) => c.peer && !(avoid && avoid.has(c)) && !(avoidPeers && avoidPeers.has(c.peer.id)));
  }

  /** Dial the empty slots (each new connection says hello at once). */
  fill() {
    while (this.active.length < this.size) this._dial(0);
  }

  /**
   * Take `connection` out of the pool (lost, or its worker drains): no new
   * calls go on it, it closes once its calls have ended, and a new connection
   * takes its slot on the next `pick`.
   * @param {import("./connection").Connection} connection
   * @returns {boolean} whether it was in the pool
   */
  remove(connection) {
    const i = this.active.indexOf(connection);
    if (i >= 0) this.active.splice(i, 1);
    this._retire(connection);
    return i >= 0;
  }

  /**
   * A connection was lost (its worker died or left): it leaves the pool, and
   * the spreading starts over at its shortest delay (a worker may come back).
   * @param {import("./connection").Connection} connection
   */
  lost(connection) {
    this.remove(connection);
    this._spreadMs = SPREAD_FIRST_MS;
    this._spreadSoon(true);
  }

  /** Take every connection out (the server went down, or the bridge stops); new ones are made on demand. */
  removeAll() {
    clearTimeout(this._spreadTimer);
    this._spreadTimer = null;
    for (const c of this.active.splice(0)) this._retire(c);
  }

  /** Every connection, in the pool or retired with calls still in flight. */
  all() {
    return [...this.active, ...this.retired];
  }

  /**
   * What the pool looks like: one entry per connection in it.
   * @returns {{id: number, pid: number|null, worker: number|null, versions: object|null, inFlight: number, calls: number}[]}
   */
  snapshot() {
    return this.active.map((c) => ({
      id: c.id,
      pid: c.peer ? c.peer.pid : null,
      worker: c.peer ? c.peer.worker : null,
      versions: c.peer ? c.peer.versions : null,
      inFlight: c.pending.size,
      calls: c.calls,
    }));
  }

  // -- internals --------------------------------------------------------------

  _dial(redials) {
    const connection = this._connect({ redials });
    connection.redials = redials;
    this.dialled += 1;
    this.active.push(connection);
    this._hello(connection).then(
      (health) => this._met(connection, health),
      () => {}, // a lost connection is handled by its onDisconnect; a slow one stays "unknown"
    );
    return connection;
  }

  /** The hello came back: note the peer, and redial a duplicate while the pool reaches fewer workers than it has connections. */
  _met(connection, health) {
    // The fields read here are HEALTH_READ.
    if (!health || typeof health.pid !== "number") return;
    // Workers are told apart by their instance id: pids repeat across machines (containers).
    const id = typeof health.instance === "string" ? health.instance : health.pid;
    const known = this.active.some((c) => c.peer && c.peer.id === id);
    connection.peer = {
      id, pid: health.pid, worker: health.worker ?? null, versions: health.versions ?? null,
      workers: Number.isInteger(health.workers) ? health.workers : null,
    };
    if (!this.active.includes(connection)) return;
    if (!known) this._spreadMs = SPREAD_FIRST_MS; // a worker the pool had not reached
    this._spreadSoon();
    if (connection.redials >= this.redials) return;
    const others = this.active.filter((c) => c !== connection && c.peer);
    if (!others.some((c) => c.peer.id === id)) return;
    if (!this._shouldSpread()) return;
    this.logger.debug({ connection: connection.id, pid: health.pid }, "connection reached a worker the pool already has; redialling");
    this.remove(connection);
    this._dial(connection.redials + 1);
  }

  /** Schedule the next spreading redial, while connections share workers. */
  _spreadSoon(restart = false) {
    if (restart && this._spreadTimer) {
      clearTimeout(this._spreadTimer);
      this._spreadTimer = null;
    }
    if (this._spreadTimer || this.active.length < 2) return;
    this._spreadTimer = setTimeout(() => {
      this._spreadTimer = null;
      this._spread();
    }, this._spreadMs);
    this._spreadTimer.unref();
  }

  /** Redial the least busy connection of the worker that has the most connections. */
  _spread() {
    const byPeer = new Map();
    if (!this._shouldSpread()) return; // spreading again when a connection is lost
    for (const c of this.active) if (c.peer) byPeer.set(c.peer.id, [...(byPeer.get(c.peer.id) || []), c]);
    const shared = [...byPeer.values()].filter((cs) => cs.length > 1).sort((a, b) => b.length - a.length)[0];
    if (!shared) return; // every connection on its own worker: nothing to spread
    const victim = shared.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    this.logger.debug({ connection: victim.id, pid: victim.peer.pid, delayMs: this._spreadMs }, "redialling a connection that shares its worker");
    if (!this._missingWorkers()) this._spreadMs = Math.min(SPREAD_MAX_MS, this._spreadMs * 2);
    this.remove(victim);
    this._dial(this.redials); // no quick redials of its own: the next spread comes after the delay
    this._spreadSoon();
  }

  /** True while the pool reaches fewer workers than the server says it has (up to the pool's size). */
  _missingWorkers() {
    const peers = this.active.filter((c) => c.peer);
    const said = Math.max(0, ...peers.map((c) => c.peer.workers || 0));
    return new Set(peers.map((c) => c.peer.id)).size < Math.min(this.active.length, said);
  }

  /**
   * Whether redialling may reach a worker the pool lacks: while it reaches fewer
   * than the server says it has (health()'s `workers`); from a server that does
   * not say, while connections share a worker.
   */
  _shouldSpread() {
    const peers = this.active.filter((c) => c.peer);
    if (peers.some((c) => c.peer.workers !== null)) return this._missingWorkers();
    return new Set(peers.map((c) => c.peer.id)).size < this.active.length;
  }

  _retire(connection) {
    connection.retire();
    for (const old of this.retired) if (old.pending.size === 0) this.retired.delete(old);
    if (connection.pending.size > 0) this.retired.add(connection);
  }
}

/** The peer a connection's load counts against: its worker's pid once known. */
function peerKey(connection) {
  return connection.peer ? `peer:${connection.peer.id}` : `connection:${connection.id}`;
}

function lessThan(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

module.exports = { ConnectionPool, DEFAULT_SIZE, DEFAULT_REDIALS, HEALTH_READ };
