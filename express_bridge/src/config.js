"use strict";
/**
 * Configuration from the environment, validated once at start-up.
 *
 * Every setting has a default that is safe on a developer's machine: the
 * bridge listens on the spec's bridge_host:bridge_port (127.0.0.1:3000) and
 * talks to expertd on the spec's default endpoint (expertd/protocol.json).
 */

const net = require("node:net");
const { parseOrigins } = require("./cors");
const { parseEndpoint, EndpointError } = require("./endpoint");
const spec = require("./spec");

const DEFAULTS = Object.freeze({
  HOST: spec.BRIDGE_HOST,
  PORT: String(spec.BRIDGE_PORT),
  EXPERTD_ENDPOINT: spec.DEFAULT_ENDPOINT,
  RPC_TIMEOUT: "30",
  RPC_PROBE_TIMEOUT: "1",
  RPC_HEARTBEAT: String(spec.HEARTBEAT_S),
  BODY_LIMIT: "1mb",
  SHUTDOWN_TIMEOUT: "10",
  LOG_LEVEL: "info",
  COALESCE_MAX: "64",
  COALESCE_MAX_BYTES: "4mb",
  COALESCE_WAIT_MS: "0",
  COALESCE_IN_FLIGHT: "2",
  COALESCE_MAX_QUEUE: "256",
  JSON_MAX_DEPTH: "64",
  // Connections to expertd in the bridge's pool (src/pool.js); servers balance per connection.
  EXPERTD_CONNECTIONS: "4",
  ADMIT_MAX_IN_FLIGHT: "256",
  ADMIT_MAX_STREAMS: "32",
  ADMIT_ADAPTIVE: "true",
  ADMIT_MAX_LAG_MS: "100",
});

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);
const UNITS = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };
const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** A setting that cannot be used; the message names the variable. `exitCode`: the bridge's exit status for it. */
class ConfigError extends Error {
  constructor(message, exitCode = 1) {
    super(message);
    this.name = "ConfigError";
    this.exitCode = exitCode;
  }
}

/**
 * Parse a size such as "1mb", "512kb", "100" (bytes) into a byte count.
 * @param {string|number} value
 * @returns {number} bytes (an integer >= 1)
 */
function parseBytes(value) {
  if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(String(value));
  if (!m) throw new ConfigError(`not a size: ${JSON.stringify(value)} (use e.g. 100kb, 1mb)`);
  const bytes = Math.floor(Number(m[1]) * UNITS[(m[2] || "b").toLowerCase()]);
  if (bytes < 1) throw new ConfigError(`size must be at least 1 byte: ${JSON.stringify(value)}`);
  return bytes;
}

/**
 * True when `host` can only be reached from this machine: 127.0.0.0/8, ::1,
 * an IPv4-mapped loopback address, or the name "localhost".
 * @param {string} host
 * @returns {boolean}
 */
function isLoopbackHost(host) {
  const h = String(host || "").trim().toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  const family = net.isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? "ipv4" : "ipv6");
}

function parseSeconds(name, raw, { allowZero = false } = {}) {
  const n = Number(raw);
  if (String(raw).trim() === "" || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    throw new ConfigError(`${name} must be a number of seconds ${allowZero ? ">= 0" : "> 0"}, got ${JSON.stringify(raw)}`);
  }
  return Math.round(n * 1000);
}

function parseInteger(name, raw, min) {
  const n = Number(raw);
  if (!/^\s*\d+\s*$/.test(String(raw)) || !Number.isSafeInteger(n) || n < min) {
    throw new ConfigError(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function parseMilliseconds(name, raw) {
  const n = Number(raw);
  if (String(raw).trim() === "" || !Number.isFinite(n) || n < 0 || n > 60000) {
    throw new ConfigError(`${name} must be a number of milliseconds 0-60000, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function parseBoolean(name, raw) {
  const v = String(raw).trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(v)) return true;
  if (["false", "0", "no", "off"].includes(v)) return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

/**
 * Read and check the bridge's settings.
 * @param {Record<string, string|undefined>} [env=process.env]
 * @returns {{host: string, port: number, endpoint: string, token: string|null,
 *   rpcTimeoutMs: number, probeTimeoutMs: number, heartbeatMs: number,
 *   bodyLimit: number, shutdownTimeoutMs: number, logLevel: string,
 *   jsonMaxDepth: number, connections: number,
 *   coalesce: {maxBatch: number, maxBytes: number, waitMs: number, inFlight: number, maxQueue: number},
 *   admission: {maxInFlight: number, maxStreams: number, adaptive: boolean, maxLagMs: number}}}
 * @throws {ConfigError} when a value is malformed
 */
function loadConfig(env = process.env) {
  const pick = (name) => {
    const v = env[name];
    return v === undefined || v === "" ? DEFAULTS[name] : v;
  };
  const host = pick("HOST");
  const portRaw = pick("PORT");
  const port = Number(portRaw);
  if (!/^\d+$/.test(String(portRaw)) || port > 65535) {
    throw new ConfigError(`PORT must be an integer 0-65535, got ${JSON.stringify(portRaw)}`);
  }
  const endpoint = pick("EXPERTD_ENDPOINT");
  try {
    parseEndpoint(endpoint);
  } catch (err) {
    // A malformed endpoint is a usage error (exit 2), as for the expertd commands.
    if (err instanceof EndpointError) throw new ConfigError(`EXPERTD_ENDPOINT: ${err.message}`, 2);
    throw err;
  }
  const token = env.EXPERTD_HTTP_TOKEN ? String(env.EXPERTD_HTTP_TOKEN) : null;
  if (token !== null && /\s/.test(token)) {
    throw new ConfigError("EXPERTD_HTTP_TOKEN must not contain whitespace");
  }
  const logLevel = pick("LOG_LEVEL").toLowerCase();
  if (!LOG_LEVELS.has(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${[...LOG_LEVELS].join(", ")}, got ${JSON.stringify(logLevel)}`);
  }
  let bodyLimit;
  try {
    bodyLimit = parseBytes(pick("BODY_LIMIT"));
  } catch (err) {
    throw new ConfigError(`BODY_LIMIT: ${err.message}`);
  }
  let coalesceMaxBytes;
  try {
    coalesceMaxBytes = parseBytes(pick("COALESCE_MAX_BYTES"));
  } catch (err) {
    throw new ConfigError(`COALESCE_MAX_BYTES: ${err.message}`);
  }
  const coalesce = {
    maxBatch: parseInteger("COALESCE_MAX", pick("COALESCE_MAX"), 1),
    maxBytes: coalesceMaxBytes,
    waitMs: parseMilliseconds("COALESCE_WAIT_MS", pick("COALESCE_WAIT_MS")),
    inFlight: parseInteger("COALESCE_IN_FLIGHT", pick("COALESCE_IN_FLIGHT"), 1),
    maxQueue: parseInteger("COALESCE_MAX_QUEUE", pick("COALESCE_MAX_QUEUE"), 1),
  };
  let corsOrigins;
  try {
    corsOrigins = parseOrigins(env.CORS_ORIGINS);
  } catch (err) {
    throw new ConfigError(`CORS_ORIGINS: ${err.message}`);
  }
  return {
    host,
    port,
    endpoint,
    token,
    rpcTimeoutMs: parseSeconds("RPC_TIMEOUT", pick("RPC_TIMEOUT")),
    probeTimeoutMs: parseSeconds("RPC_PROBE_TIMEOUT", pick("RPC_PROBE_TIMEOUT")),
    heartbeatMs: parseSeconds("RPC_HEARTBEAT", pick("RPC_HEARTBEAT")),
    bodyLimit,
    shutdownTimeoutMs: parseSeconds("SHUTDOWN_TIMEOUT", pick("SHUTDOWN_TIMEOUT"), { allowZero: true }),
    logLevel,
    jsonMaxDepth: parseInteger("JSON_MAX_DEPTH", pick("JSON_MAX_DEPTH"), 1),
    connections: parseInteger("EXPERTD_CONNECTIONS", pick("EXPERTD_CONNECTIONS"), 1),
    coalesce,
    // Load shedding before Express (admission.js); 0 turns a check off.
    admission: {
      maxInFlight: parseInteger("ADMIT_MAX_IN_FLIGHT", pick("ADMIT_MAX_IN_FLIGHT"), 0),
      maxStreams: parseInteger("ADMIT_MAX_STREAMS", pick("ADMIT_MAX_STREAMS"), 0),
      adaptive: parseBoolean("ADMIT_ADAPTIVE", pick("ADMIT_ADAPTIVE")),
      maxLagMs: parseMilliseconds("ADMIT_MAX_LAG_MS", pick("ADMIT_MAX_LAG_MS")),
    },
    corsOrigins,
  };
}

/**
 * Refuse a configuration that would expose the bridge without a token.
 * @param {{host: string, token: string|null}} config
 * @throws {ConfigError} when HOST is not a loopback address and no token is set
 */
function assertSafeToListen(config) {
  if (!config.token && !isLoopbackHost(config.host)) {
    throw new ConfigError(
      `refusing to listen on non-loopback HOST=${config.host} without EXPERTD_HTTP_TOKEN: ` +
        "set a token (clients then send 'Authorization: Bearer <token>') or use HOST=127.0.0.1",
    );
  }
}

module.exports = { loadConfig, assertSafeToListen, isLoopbackHost, parseBytes, ConfigError, DEFAULTS };
