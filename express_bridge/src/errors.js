"use strict";
/**
 * Errors and their HTTP form: every error leaves the bridge as
 * `{"error": {"name": "...", "message": "...", "status": N}}`, never as HTML.
 */

/** The JSON name of a value's type ("null", "array", "object", "string", ...), for messages. */
function jsonType(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/** An error that already knows its HTTP status and public name. */
class HttpError extends Error {
  /**
   * @param {number} status HTTP status code
   * @param {string} name short machine-readable name, e.g. "UnknownExpert"
   * @param {string} message human-readable explanation (sent to the client)
   * @param {object} [extra] e.g. `{ headers: {"Retry-After": "1"} }`
   */
  constructor(status, name, message, extra = {}) {
    super(message);
    this.name = name;
    this.status = status;
    this.headers = extra.headers || {};
    this.expose = true;
  }
}

/**
 * The error catalogue (expertd/protocol.json, through spec.js), shared with
 * the Python side: each error name's HTTP status, whether it is retryable, and its scope.
 */
const { ERRORS: CATALOGUE, ERROR, UNKNOWN_ERROR, TIMEOUT_HEADER } = require("./spec");
const { RETRYABLE, mayAskAgain } = require("./retry");

/** Seconds a client should wait before asking again after a retryable 503. */
const RETRY_AFTER_S = "1";

/**
 * An HttpError for a catalogue name: its status comes from the catalogue, and
 * a retryable 503 carries Retry-After.
 * @param {string} name a catalogue name, e.g. "Overloaded"
 * @param {string} message
 * @returns {HttpError}
 */
function catalogueError(name, message) {
  const entry = CATALOGUE[name] || CATALOGUE[UNKNOWN_ERROR];
  const headers = entry.retryable && entry.status === 503 ? { "Retry-After": RETRY_AFTER_S } : {};
  return new HttpError(entry.status, name, message, { headers });
}

/** expertd does not answer (nothing listens, or it stopped answering). HTTP 503. */
class ServerUnavailableError extends HttpError {
  constructor(message) {
    const e = catalogueError(ERROR.ServerUnavailable, message);
    super(e.status, e.name, message, e);
  }
}

/** expertd is up but did not answer this call in time. HTTP 504. */
class RpcTimeoutError extends HttpError {
  constructor(message) {
    const e = catalogueError(ERROR.RpcTimeout, message);
    super(e.status, e.name, message, e);
  }
}

/** The bridge (its coalescer queue) or expertd is at capacity: HTTP 503 with Retry-After. */
class OverloadedError extends HttpError {
  constructor(message) {
    const e = catalogueError(ERROR.Overloaded, message);
    super(e.status, e.name, message, e);
  }
}

/**
 * The HTTP status of each exception name expertd sends back. Any other remote
 * name is treated as the catalogue's InternalError.
 */
const REMOTE_STATUS = Object.freeze(Object.fromEntries(
  Object.entries(CATALOGUE).filter(([, e]) => e.side === "server").map(([name, e]) => [name, e.status])));

/**
 * An error raised by the remote server (a zerorpc ERR event), with its
 * remote exception name and message; the Python traceback is dropped.
 */
class RemoteError extends HttpError {
  /**
   * @param {string} name remote exception class name
   * @param {string} message remote exception message
   */
  constructor(name, message) {
    const known = Object.prototype.hasOwnProperty.call(REMOTE_STATUS, name);
    const status = known ? REMOTE_STATUS[name] : REMOTE_STATUS[UNKNOWN_ERROR];
    const retryAfter = known && RETRYABLE.has(name) && status === 503;
    super(status, name || "RemoteError", message || "", retryAfter ? { headers: { "Retry-After": RETRY_AFTER_S } } : {});
    this.remote = true;
  }
}

/**
 * Build the JSON body for an error.
 * @param {{status: number, name: string, message: string}} err
 * @returns {{error: {name: string, message: string, status: number}}}
 */
function errorBody(err) {
  return { error: { name: err.name, message: err.message, status: err.status } };
}

// body-parser's error types -> our public names.
const PARSER_ERRORS = {
  "entity.parse.failed": [400, "MalformedJSON"],
  "entity.too.large": [413, "PayloadTooLarge"],
  "encoding.unsupported": [415, "UnsupportedMediaType"],
  "charset.unsupported": [415, "UnsupportedMediaType"],
  "request.aborted": [400, "RequestAborted"],
  "request.size.invalid": [400, "BadRequest"],
  "stream.encoding.set": [CATALOGUE[ERROR.InternalError].status, ERROR.InternalError],
  "parameters.too.many": [413, "PayloadTooLarge"],
};

/**
 * What a 413 for a body over BODY_LIMIT says: the sizes, the setting that
 * raises the limit, and for a batch how to send it without raising it.
 * @param {{length?: number, limit: number}} err body-parser's entity.too.large error
 * @param {{route?: string, expert?: string}} [where] res.locals of the request (route pattern, escaped expert name)
 * @returns {string}
 */
function tooLargeMessage(err, where = {}) {
  const size = Number.isFinite(err.length) ? `${err.length} bytes, ` : "";
  const wanted = Number.isFinite(err.length) && err.length > err.limit ? err.length : err.limit * 2;
  let message = `request body is ${size}larger than the bridge's limit of ${err.limit} bytes; ` +
    `the bridge's BODY_LIMIT setting raises it (e.g. BODY_LIMIT=${Math.ceil(wanted / 1024)}kb)`;
  if (where.route === "/experts/:name/batch") {
    message += `, or split the batch into smaller ones, or send the documents one per line to ` +
      `POST /experts/${where.expert || ":name"}/stream (NDJSON, where BODY_LIMIT bounds each line, not the whole stream)`;
  } else if (where.route === "/experts/:name/learn") {
    message += ", or split the examples into smaller calls";
  }
  return message;
}

/**
 * Turn anything thrown into an HttpError: ours pass through, body-parser's
 * are renamed, anything unexpected becomes a 500 with a generic message.
 * @param {any} err
 * @param {{route?: string, expert?: string}} [where] the request's res.locals, for messages that name its route
 * @returns {HttpError}
 */
function toHttpError(err, where = {}) {
  if (err instanceof HttpError) return err;
  if (err && typeof err.type === "string" && PARSER_ERRORS[err.type]) {
    const [status, name] = PARSER_ERRORS[err.type];
    let message = err.message;
    if (err.type === "entity.parse.failed") message = `request body is not valid JSON: ${err.message}`;
    if (err.type === "entity.too.large") message = tooLargeMessage(err, where);
    return new HttpError(status, name, message);
  }
  if (err instanceof URIError && err.status === 400) {
    // The router could not percent-decode a path segment, e.g. /experts/%E0%A4%A.
    return new HttpError(400, "MalformedURL", `the URL is not valid percent-encoded UTF-8: ${err.message}`);
  }
  if (err && Number.isInteger(err.status) && err.status >= 400 && err.status < 500 && err.expose) {
    return new HttpError(err.status, err.name && err.name !== "Error" ? err.name : "BadRequest", err.message);
  }
  const wrapped = catalogueError(ERROR.InternalError, "the bridge failed to handle this request");
  wrapped.cause = err;
  return wrapped;
}

/**
 * Express error middleware: log 5xx causes, answer JSON.
 * @param {{error: Function}} logger a pino-style logger
 * @returns {import("express").ErrorRequestHandler}
 */
function errorHandler(logger) {
  // eslint-disable-next-line no-unused-vars
  return (err, req, res, next) => {
    const httpErr = toHttpError(err, res.locals);
    res.locals.errorName = httpErr.name;
    if (httpErr.status >= 500 && httpErr.cause) {
      logger.error({ err: httpErr.cause, reqId: req.id, traceId: req.trace && req.trace.traceId }, "unhandled error");
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(httpErr.status).set(httpErr.headers);
    if (httpErr.status === 401) res.set("WWW-Authenticate", 'Bearer realm="expertd"');
    res.json(errorBody(httpErr));
  };
}

/**
 * Fallback for unknown routes: 404 JSON.
 * @returns {import("express").RequestHandler}
 */
function notFound() {
  return (req, res, next) => {
    next(new HttpError(404, "NotFound", `no route for ${req.method} ${req.path}`));
  };
}

/** Node's HTTP parser errors (before Express sees a request) -> status and public name. */
const CLIENT_ERRORS = {
  HPE_HEADER_OVERFLOW: [431, "HeadersTooLarge", "the request's headers are larger than the server accepts (16 KiB)"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "RequestTimeout", "the request was not received in time"],
  HPE_HEADERS_TIMEOUT: [408, "RequestTimeout", "the request's headers were not received in time"],
};

/**
 * A `clientError` listener for the http.Server: a request Node cannot parse
 * (headers too large, a malformed request line or header, a bad chunk) gets
 * a JSON 4xx like every other error, then the connection is closed.
 * @param {{debug: Function}} logger
 * @returns {(err: any, socket: import("node:net").Socket) => void}
 */
function clientErrorHandler(logger) {
  return (err, socket) => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, name, message] = CLIENT_ERRORS[err.code] || [400, "MalformedRequest", `the request is not valid HTTP/1.1 (${err.code || "parse error"})`];
    logger.debug({ code: err.code, status }, "malformed HTTP request");
    const body = JSON.stringify(errorBody({ status, name, message }));
    const reason = { 400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large" }[status];
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`);
  };
}

module.exports = {
  jsonType,
  clientErrorHandler,
  HttpError,
  RemoteError,
  ServerUnavailableError,
  RpcTimeoutError,
  OverloadedError,
  catalogueError,
  TIMEOUT_HEADER,
  REMOTE_STATUS,
  RETRYABLE,
  mayAskAgain,
  CATALOGUE,
  ERROR,
  errorBody,
  toHttpError,
  tooLargeMessage,
  errorHandler,
  notFound,
};
