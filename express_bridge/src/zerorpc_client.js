"use strict";
/**
 * The one place the bridge makes a stock `zerorpc.Client`, and the protocol
 * extension it speaks on top: the caller's deadline in the request header.
 *
 * expertd reads an optional header key (the spec.s
 * `headers.deadline.key` in expertd/protocol.json, `expertd_timeout_ms`): how many milliseconds the
 * caller will wait for this call, so that the server answers `Overloaded`
 * instead of computing work nobody waits for. Stock zerorpc servers ignore
 * unknown header keys.
 *
 * The npm zerorpc client (0.9.8, pinned) has no option for extra header keys:
 * the first event of a call gets its header from
 * `ClientChannel.prototype._createHeader` (lib/channel.js), and
 * `Client#invoke` opens the channel and sends that event synchronously. So a
 * client made here has its `_socket.openChannel` wrapped: while
 * `invokeWithHeader` runs, the channel it opens adds the given keys to its
 * first header (and only to it: heartbeats and `_zpc_more` keep the stock
 * header). Tested in test/header.test.js against a raw ZeroMQ ROUTER.
 */

const zerorpc = require("zerorpc");
const { TIMEOUT_HEADER } = require("./spec");
const { secureClient } = require("./curve");

/**
 * A new, unconnected zerorpc client with the header extension installed.
 * Every zerorpc.Client of the bridge is made here, with its socket options
 * (CURVE keys, see curve.js) set before it connects.
 * @param {object} options
 * @param {number} options.timeoutMs the caller's own timeout; zerorpc's timer (whole seconds) is set past it as a backstop
 * @param {number} options.heartbeatMs zerorpc heartbeat interval
 * @param {{warn: Function}} options.logger
 * @param {object} [options.curve] CURVE socket options from curveOptions() (empty: none)
 * @returns {zerorpc.Client}
 */
function newZerorpcClient({ timeoutMs, heartbeatMs, logger, curve = {} }) {
  const client = new zerorpc.Client({ timeout: zerorpcTimeoutSeconds(timeoutMs), heartbeatInterval: heartbeatMs });
  client.on("error", (err) => logger.warn({ err: String(err) }, "zerorpc socket error"));
  secureClient(client, curve);
  installHeaderHook(client);
  return client;
}

/** zerorpc's own call timer, in whole seconds, set to fire after ours. @param {number} timeoutMs */
function zerorpcTimeoutSeconds(timeoutMs) {
  return Math.ceil(timeoutMs / 1000) + 2;
}

/**
 * Wrap the client's `openChannel` so that a channel opened while `client[EXTRA]`
 * is set puts those keys into its first event's header.
 * @param {zerorpc.Client} client
 */
function installHeaderHook(client) {
  const socket = client._socket;
  if (!socket || typeof socket.openChannel !== "function") {
    throw new Error("zerorpc client has no _socket.openChannel: the header extension needs zerorpc 0.9.8");
  }
  const openChannel = socket.openChannel;
  socket.openChannel = function openChannelWithHeader(srcEvent) {
    const channel = openChannel.call(this, srcEvent);
    const extra = client[EXTRA];
    if (extra && !srcEvent) {
      const createHeader = channel._createHeader;
      channel._createHeader = function createHeaderWithExtra(...args) {
        const first = this._fresh;
        const header = createHeader.apply(this, args);
        return first ? { ...header, ...extra } : header;
      };
    }
    return channel;
  };
}

const EXTRA = Symbol("expertd header keys for the channel being opened");

/**
 * `client.invoke(method, ...args, callback)`, with `extraHeader` merged into
 * the header of the call's first event.
 * @param {zerorpc.Client} client a client made by newZerorpcClient
 * @param {object} extraHeader e.g. `{expertd_timeout_ms: 5000}`
 * @param {string} method
 * @param {any[]} args
 * @param {{timeoutMs: number}} options
 * @param {(err: any, result: any) => void} callback
 */
function invokeWithHeader(client, extraHeader, method, args, { timeoutMs }, callback) {
  client[EXTRA] = extraHeader;
  try {
    client.invoke({ timeout: zerorpcTimeoutSeconds(timeoutMs) }, method, ...args, callback);
  } finally {
    client[EXTRA] = null;
  }
}

/**
 * The header keys that tell expertd how long the caller waits.
 * @param {number} timeoutMs
 * @returns {Record<string, number>}
 */
function deadlineHeader(timeoutMs) {
  return { [TIMEOUT_HEADER]: Math.max(1, Math.floor(timeoutMs)) };
}

module.exports = { newZerorpcClient, invokeWithHeader, deadlineHeader, zerorpcTimeoutSeconds };
