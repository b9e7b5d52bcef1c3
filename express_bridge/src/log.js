"use strict";
/**
 * The bridge process's own log: pino JSON lines on stdout, written so that a
 * log reader that stops reading never stops the bridge.
 *
 * pino's default destination writes synchronously, and when stdout is a pipe
 * whose reader has stalled (a full pipe: `npm start | less`, a stuck log
 * shipper) it sleeps 100 ms and retries, on the event loop, for every line:
 * measured, the bridge then answered a few requests a second and, after
 * SIGTERM, never exited. Here lines are written asynchronously; a stalled
 * reader makes them wait in a buffer of at most `LOG_BUFFER_BYTES`, beyond
 * which new lines are dropped (and counted) instead of blocking anything.
 * `flush` gives the buffered lines a moment to be written before the process
 * exits, and says whether they were: a write to a stalled reader blocks a
 * libuv thread, and Node's exit then waits for that thread forever, so the
 * caller kills the process instead (`exitProcess`).
 */

const pino = require("pino");
const SonicBoom = require("sonic-boom");

/** Most log bytes kept waiting for a slow stdout reader; beyond it, lines are dropped. */
const LOG_BUFFER_BYTES = 16 * 1024 * 1024;
/** Longest wait (ms) at exit for the buffered lines to be written. */
const FLUSH_TIMEOUT_MS = 1000;

/**
 * A pino logger on file descriptor `fd` (stdout) that never blocks the event loop.
 * @param {string} level pino level
 * @param {number} [fd=1]
 * @returns {{logger: import("pino").Logger, flush: () => Promise<boolean>, dropped: () => number}}
 *   `flush`: resolves true once the buffered lines are written, false after FLUSH_TIMEOUT_MS;
 *   `dropped`: lines dropped so far because the buffer was full
 */
function processLogger(level, fd = 1) {
  let dropped = 0;
  // SonicBoom itself, not pino.destination(): that one also flushes synchronously
  // at process exit, which blocks forever on a full pipe.
  const destination = new SonicBoom({ fd, sync: false, maxLength: LOG_BUFFER_BYTES });
  destination.on("drop", () => {
    dropped += 1;
  });
  // stdout closed (its reader went away): the log is lost, the bridge keeps serving.
  destination.on("error", () => {});
  const logger = pino({ level }, destination);
  // A write to a stalled reader blocks a libuv thread, never the event loop;
  // at exit what the reader did not take is lost, the exit is not.
  // Written out = no write in flight and nothing buffered. SonicBoom's own
  // flush(cb) calls back while a write is still blocked, so its state is read
  // (`_writing`, `_len`: sonic-boom is pinned in package.json for this).
  const idle = () => !destination._writing && destination._len === 0;
  const flush = async () => {
    const deadline = Date.now() + FLUSH_TIMEOUT_MS;
    while (!idle()) {
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return true;
  };
  return { logger, flush, dropped: () => dropped };
}

/**
 * Exit with `code` once the log is flushed; if the log's reader has stalled,
 * SIGKILL this process (Node's own exit would wait forever for the blocked write).
 * @param {() => Promise<boolean>} flush
 * @param {number} code
 */
async function exitProcess(flush, code) {
  if (await flush()) process.exit(code);
  process.kill(process.pid, "SIGKILL");
}

module.exports = { processLogger, exitProcess, LOG_BUFFER_BYTES, FLUSH_TIMEOUT_MS };
