"use strict";
/**
 * The one parser of ZeroMQ endpoints on the Node side, with the same rules
 * and messages as Python's `expertd/endpoint.py`: a malformed endpoint throws
 * an EndpointError whose message is one line saying what was expected and
 * suggesting the fix, e.g.
 *   endpoint 'localhost:PORT' has no transport: did you mean tcp://localhost:PORT?
 * `tests/corpus/endpoints.json` holds the cases both languages must answer alike.
 */

const net = require("node:net");
const { DEFAULT_HOST, DEFAULT_PORT, BRIDGE_PORT } = require("./spec");

/** What a well-formed endpoint looks like, for messages. */
const EXPECTED = "tcp://HOST:PORT or ipc:///PATH";
const HOST_CHARS = /^[A-Za-z0-9._-]+$/;
const OTHER_ZMQ = new Set(["pgm", "epgm", "tipc", "vmci", "ws", "wss", "udp"]);
const HTTP = new Set(["http", "https"]);
const SPACES = " \t\n\r\v\f";
const ESCAPES = { "\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "'": "\\'" };

/** A malformed endpoint; the message (one line) says what was expected and how to fix it. */
class EndpointError extends Error {
  constructor(message) {
    super(message);
    this.name = "EndpointError";
  }
}

/** `text` in quotes, control characters escaped, so that a message stays one line. */
function shown(text) {
  let out = "";
  for (const c of text) {
    const code = c.codePointAt(0);
    if (Object.prototype.hasOwnProperty.call(ESCAPES, c)) out += ESCAPES[c];
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else if (code === 0x2028 || code === 0x2029) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += c;
  }
  return `'${out}'`;
}

function fail(text, problem, suggestion) {
  const hint = suggestion ? `did you mean ${suggestion}?` : `expected ${EXPECTED}`;
  return new EndpointError(`endpoint ${shown(text)} ${problem}: ${hint}`);
}

function strip(text) {
  let start = 0;
  let end = text.length;
  while (start < end && SPACES.includes(text[start])) start += 1;
  while (end > start && SPACES.includes(text[end - 1])) end -= 1;
  return text.slice(start, end);
}

function isNumber(text) {
  return /^[0-9]+$/.test(text);
}

function validHost(host) {
  if (host === "*") return true;
  if (host.includes(":") || host.includes("[") || host.includes("]")) return !host.includes("%") && net.isIPv6(host);
  return HOST_CHARS.test(host) && !host.startsWith("-") && !host.startsWith(".");
}

function withPort(host) {
  return `tcp://${host.includes(":") ? `[${host}]` : host}:${DEFAULT_PORT}`;
}

/** Python's str.partition: [before, separator or "", after]. */
function partition(text, sep) {
  const i = text.indexOf(sep);
  return i < 0 ? [text, "", ""] : [text.slice(0, i), sep, text.slice(i + sep.length)];
}

/** Python's str.rpartition: ["" or before, separator or "", after]. */
function rpartition(text, sep) {
  const i = text.lastIndexOf(sep);
  return i < 0 ? ["", "", text] : [text.slice(0, i), sep, text.slice(i + sep.length)];
}

/**
 * Parse an endpoint.
 * @param {string} text e.g. "tcp://HOST:PORT", "ipc:///tmp/expertd.sock"
 * @param {{binding?: boolean}} [options] binding: an endpoint to listen on
 *   (tcp://*:PORT and tcp://HOST:* allowed); a client connects to one host and port
 * @returns {{transport: string, host: string|null, port: number|null, path: string|null}}
 * @throws {EndpointError} when it is malformed
 */
function parseEndpoint(text, { binding = false } = {}) {
  if (typeof text !== "string" || strip(text) === "") {
    throw new EndpointError(`endpoint is empty: expected ${EXPECTED}, e.g. tcp://${DEFAULT_HOST}:${DEFAULT_PORT}`);
  }
  if (text !== strip(text)) throw fail(text, "has spaces around it", strip(text));
  if ([...text].some((c) => SPACES.includes(c))) throw fail(text, "has spaces in it");
  const [transport, sep, address] = partition(text, "://");
  if (!sep) throw noTransport(text);
  const lowered = transport.toLowerCase();
  if (HTTP.has(lowered)) {
    const authority = rpartition(address.split("/")[0], "@")[2];
    const host = authority.startsWith("[") ? partition(authority.slice(1), "]")[0] : partition(authority, ":")[0];
    throw new EndpointError(
      `endpoint ${shown(text)} is an HTTP address (the bridge's, port ${BRIDGE_PORT} by default); ` +
        `expertd speaks ZeroMQ: did you mean ${withPort(host || DEFAULT_HOST)}?`,
    );
  }
  if (lowered !== transport && (lowered === "tcp" || lowered === "ipc")) {
    throw fail(text, "has an upper-case transport", `${lowered}://${address}`);
  }
  if (transport === "ipc") {
    if (!address) throw new EndpointError(`endpoint ${shown(text)} has no path: expected ipc:///PATH/TO/SOCKET`);
    return { transport: "ipc", host: null, port: null, path: address };
  }
  if (transport === "inproc") {
    // Inside one process: nothing outside can reach it (expertd check binds it).
    if (binding && address) return { transport: "inproc", host: null, port: null, path: address };
    if (binding) throw new EndpointError(`endpoint ${shown(text)} has no name: expected inproc://NAME`);
    throw new EndpointError(`endpoint ${shown(text)}: an inproc:// endpoint lives inside one process, so no client can connect to it: expected ${EXPECTED}`);
  }
  if (transport !== "tcp") {
    if (!transport) throw fail(text, "has no transport", tcpSuggestion(address));
    if (OTHER_ZMQ.has(transport)) {
      throw new EndpointError(`endpoint ${shown(text)}: expertd serves and connects over tcp:// and ipc:// only, not ${transport}://`);
    }
    throw fail(text, `has an unknown transport ${shown(transport)}`, tcpSuggestion(address));
  }
  return parseTcp(text, address, binding);
}

/** `tcp://ADDRESS` when it is a host and a port, with the default port when only a host. */
function tcpSuggestion(address) {
  const [host, sep, port] = rpartition(address, ":");
  if (sep && isNumber(port) && validHost(host)) return `tcp://${address}`;
  return validHost(address) && address !== "*" ? withPort(address) : null;
}

function noTransport(text) {
  if (text.startsWith("/")) return fail(text, "has no transport", `ipc://${text}`);
  if (isNumber(text)) return fail(text, "has no transport", `tcp://${DEFAULT_HOST}:${text}`);
  const [host, sep, port] = rpartition(text, ":");
  if (sep && isNumber(port) && validHost(host.replace(/^\[+|\]+$/g, "") || "x")) {
    return fail(text, "has no transport", `tcp://${host || DEFAULT_HOST}:${port}`);
  }
  if (validHost(text) && text !== "*") return fail(text, "has no transport", withPort(text));
  return fail(text, "has no transport");
}

function parseTcp(text, whole, binding) {
  if (!whole) throw fail(text, "has no host and no port", `tcp://${DEFAULT_HOST}:${DEFAULT_PORT}`);
  const [address, slash] = partition(whole, "/");
  if (slash) throw fail(text, "has a path after the port", `tcp://${address}`);
  let host;
  let portText;
  if (address.startsWith("[")) {
    const [inside, bracket, tail] = partition(address.slice(1), "]");
    host = inside;
    if (!bracket) throw fail(text, "has an unclosed '['");
    if (!host.includes(":")) throw fail(text, "has brackets around a host that is not an IPv6 address", `tcp://${host}${tail}`);
    if (!tail) throw fail(text, "has no port", withPort(host));
    if (!tail.startsWith(":")) throw fail(text, "has something between ']' and the port", `tcp://[${host}]:${DEFAULT_PORT}`);
    portText = tail.slice(1);
  } else if ((address.match(/:/g) || []).length > 1) {
    const [before, , after] = rpartition(address, ":");
    if (isNumber(after) && validHost(before)) throw fail(text, "has an IPv6 address without brackets", `tcp://[${before}]:${after}`);
    throw fail(text, "has an IPv6 address without brackets", withPort(address));
  } else {
    const [before, colon, after] = partition(address, ":");
    host = before;
    portText = after;
    if (!colon) throw fail(text, "has no port", withPort(host));
  }
  if (!host) throw fail(text, "has no host", `tcp://${DEFAULT_HOST}:${portText || DEFAULT_PORT}`);
  if (!validHost(host)) {
    throw new EndpointError(`endpoint ${shown(text)}: ${shown(host)} is not a host name or an IP address: expected ${EXPECTED}`);
  }
  if (!portText) throw fail(text, "has no port", withPort(host));
  let port;
  if (portText === "*") {
    port = null;
  } else if (!isNumber(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new EndpointError(`endpoint ${shown(text)}: port ${shown(portText)} must be a number from 1 to 65535, e.g. ${withPort(host)}`);
  } else {
    port = Number(portText);
  }
  if ((host === "*" || port === null) && !binding) {
    const what = host === "*" ? "every interface" : "any port";
    const connectHost = host === "*" ? DEFAULT_HOST : host;
    const suggestion = port === null ? withPort(connectHost) : `tcp://${connectHost}:${port}`;
    throw new EndpointError(`endpoint ${shown(text)} names ${what}, which a server binds but a client cannot connect to: did you mean ${suggestion}?`);
  }
  return { transport: "tcp", host, port, path: null };
}

module.exports = { parseEndpoint, EndpointError, EXPECTED, shown };
