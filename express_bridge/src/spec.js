"use strict";
/**
 * The protocol written once: the Node loader of `expertd/protocol.json`, the
 * file the Python side reads too (`expertd/spec.py`). Defaults, the header
 * keys expertd adds to zerorpc events, the RPC methods and their arguments,
 * the fields of `health()`, the retry policy and the error catalogue all come
 * from it; docs/protocol.md explains it.
 */

const RAW = require("../../expertd/protocol.json");

/** A section of the file without its `_comment`. */
function entries(section) {
  return Object.freeze(Object.fromEntries(Object.entries(section).filter(([key]) => !key.startsWith("_"))));
}

/** Where clients look for the server when EXPERTD_ENDPOINT does not say. */
const DEFAULT_ENDPOINT = RAW.defaults.endpoint;
/** The default endpoint's host and port (the port is the one suggested when missing). */
const DEFAULT_HOST = RAW.defaults.host;
const DEFAULT_PORT = RAW.defaults.port;
/** The bridge's own default HOST and PORT. */
const BRIDGE_HOST = RAW.defaults.bridge_host;
const BRIDGE_PORT = RAW.defaults.bridge_port;
/** zerorpc's heartbeat interval, seconds. */
const HEARTBEAT_S = RAW.defaults.heartbeat_s;

/** Header keys expertd reads in a request, by role ({key, type, sent_by, doc}). */
const HEADERS = entries(RAW.headers);
/** The zerorpc header key in which a caller says how long it will wait (milliseconds). */
const TIMEOUT_HEADER = HEADERS.deadline.key;
/** The zerorpc header key holding the caller's W3C traceparent (trace_context.js). */
const TRACE_HEADER = HEADERS.trace.key;
/** The zerorpc header key listing the traceparents of the requests a coalesced call serves. */
const TRACE_LINKS_HEADER = HEADERS.trace_links.key;

/** The service's RPC methods, by name: {args (a trailing ? marks an optional one), stateful, result}. */
const METHODS = entries(RAW.methods);
/** The method names as identifiers, e.g. `METHOD.opinions_batch === "opinions_batch"`. */
const METHOD = Object.freeze(Object.fromEntries(Object.keys(METHODS).map((name) => [name, name])));
/** Methods that change the server's state (learn). */
const STATEFUL_METHODS = Object.freeze(new Set(Object.entries(METHODS).filter(([, m]) => m.stateful).map(([name]) => name)));

/** The fields of health()'s answer, by name ({type, doc}). */
const HEALTH_FIELDS = entries(RAW.health);

/**
 * The health() fields a reader relies on, checked against the spec once at load:
 * a field the spec does not describe is a mistake of the reader's.
 * @param {...string} names
 * @returns {string[]} the names
 * @throws {Error} for a name health() does not have
 */
function healthFields(...names) {
  for (const name of names) {
    if (!Object.prototype.hasOwnProperty.call(HEALTH_FIELDS, name)) throw new Error(`health() has no field ${JSON.stringify(name)} (expertd/protocol.json)`);
  }
  return names;
}

/** The error catalogue, by name: {summary, status, retryable, per_document, exit, side, hint}. */
const ERRORS = entries(RAW.errors);
/** The name an error the catalogue does not know is treated as (InternalError). */
const UNKNOWN_ERROR = RAW.errors._unknown;
/** The error names as identifiers, e.g. `ERROR.Overloaded === "Overloaded"`: code never spells one in a string. */
const ERROR = Object.freeze(Object.fromEntries(Object.keys(ERRORS).map((name) => [name, name])));
/** Errors the server answers before running the method (so even a stateful call may be asked again). */
const REFUSED_BEFORE_RUNNING = Object.freeze(new Set(RAW.retry.refused_before_running));
/** Each client's backoff parameters (base_s, factor, cap_s, jitter) and limits. */
const RETRY_PROFILES = Object.freeze(RAW.retry.profiles);

module.exports = {
  RAW,
  DEFAULT_ENDPOINT,
  DEFAULT_HOST,
  DEFAULT_PORT,
  BRIDGE_HOST,
  BRIDGE_PORT,
  HEARTBEAT_S,
  HEADERS,
  TIMEOUT_HEADER,
  TRACE_HEADER,
  TRACE_LINKS_HEADER,
  METHODS,
  METHOD,
  STATEFUL_METHODS,
  HEALTH_FIELDS,
  healthFields,
  ERRORS,
  ERROR,
  UNKNOWN_ERROR,
  REFUSED_BEFORE_RUNNING,
  RETRY_PROFILES,
};
