"use strict";
/**
 * Errors and their HTTP form: every error leaves the bridge as
 * `{"error": {"name": "...", "message": "...", "status": N}}`, never as HTML.
 */

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

/** expertd does not answer (nothing listens, or it stopped answering). HTTP 503. */
class ServerUnavailableError extends HttpError {
  constructor(message) {
    super(503, "ServerUnavailable", message, { headers: { "Retry-After": "1" } });
  }
}

/** expertd is up but did not answer this call in time. HTTP 504. */
class RpcTimeoutError extends HttpError {
  constructor(message) {
    super(504, "RpcTimeout", message);
  }
}

/**
 * The error catalogue (expertd/errors.json), shared with the Python side:
 * each error name's HTTP status, whether it is retryable, and its scope.
 */
const CATALOGUE = Object.freeze(require("../../expertd/errors.json").errors);

/**
 * The HTTP status of each exception name expertd sends back. Any other remote
 * name is treated as the catalogue's InternalError.
 */
const REMOTE_STATUS = Object.freeze(Object.fromEntries(
  Object.entries(CATALOGUE).filter(([, e]) => e.side === "server").map(([name, e]) => [name, e.status])));

/** Error names after which asking again may succeed. */
const RETRYABLE = Object.freeze(new Set(Object.entries(CATALOGUE).filter(([, e]) => e.retryable).map(([name]) => name)));

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
    const status = REMOTE_STATUS[name] || REMOTE_STATUS.InternalError;
    super(status, name || "RemoteError", message || "", status === 503 ? { headers: { "Retry-After": "1" } } : {});
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
  "stream.encoding.set": [500, "InternalError"],
  "parameters.too.many": [413, "PayloadTooLarge"],
};

/**
 * Turn anything thrown into an HttpError: ours pass through, body-parser's
 * are renamed, anything unexpected becomes a 500 with a generic message.
 * @param {any} err
 * @returns {HttpError}
 */
function toHttpError(err) {
  if (err instanceof HttpError) return err;
  if (err && typeof err.type === "string" && PARSER_ERRORS[err.type]) {
    const [status, name] = PARSER_ERRORS[err.type];
    let message = err.message;
    if (err.type === "entity.parse.failed") message = `request body is not valid JSON: ${err.message}`;
    if (err.type === "entity.too.large") message = `request body is larger than the limit of ${err.limit} bytes`;
    return new HttpError(status, name, message);
  }
  if (err && Number.isInteger(err.status) && err.status >= 400 && err.status < 500 && err.expose) {
    return new HttpError(err.status, err.name && err.name !== "Error" ? err.name : "BadRequest", err.message);
  }
  const wrapped = new HttpError(500, "InternalError", "the bridge failed to handle this request");
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
    const httpErr = toHttpError(err);
    res.locals.errorName = httpErr.name;
    if (httpErr.status >= 500 && httpErr.cause) {
      logger.error({ err: httpErr.cause, reqId: req.id }, "unhandled error");
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

module.exports = {
  HttpError,
  RemoteError,
  ServerUnavailableError,
  RpcTimeoutError,
  REMOTE_STATUS,
  RETRYABLE,
  CATALOGUE,
  errorBody,
  toHttpError,
  errorHandler,
  notFound,
};
