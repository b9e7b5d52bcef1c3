"use strict";
/**
 * Entry point: `npm start` / `node src/server.js`.
 * Reads the configuration from the environment, refuses an unsafe one, starts
 * the RPC client and the HTTP server, and shuts down gracefully on
 * SIGTERM/SIGINT (stop accepting, let in-flight requests finish, close).
 */

const http = require("node:http");
const pino = require("pino");
const { loadConfig, assertSafeToListen, ConfigError } = require("./config");
const { ExpertdClient } = require("./rpc");
const { createApp } = require("./app");
const { clientErrorHandler } = require("./errors");
const { Admission, admitted } = require("./admission");
const { processLogger, exitProcess } = require("./log");
const tracing = require("./tracing");

/**
 * Start the bridge.
 * @param {ReturnType<typeof loadConfig>} config
 * @param {{logger?: import("pino").Logger}} [options]
 * @returns {Promise<{server: http.Server, rpc: ExpertdClient, url: string, close: () => Promise<void>}>}
 * @throws {ConfigError} when HOST is not loopback and no token is set
 */
async function start(config, { logger = pino({ level: config.logLevel }) } = {}) {
  assertSafeToListen(config);
  tracing.tracer(); // the SDK loads now, if tracing is on, not during the first request
  const rpc = new ExpertdClient({
    endpoint: config.endpoint,
    timeoutMs: config.rpcTimeoutMs,
    probeTimeoutMs: config.probeTimeoutMs,
    heartbeatMs: config.heartbeatMs,
    coalesce: config.coalesce,
    connections: config.connections,
    logger,
  });
  const app = createApp({
    rpc, logger, token: config.token, bodyLimit: config.bodyLimit, healthTimeoutMs: config.probeTimeoutMs,
    corsOrigins: config.corsOrigins, jsonMaxDepth: config.jsonMaxDepth,
  });
  // Shedding comes first, before Express reads anything (admission.js).
  const admission = new Admission({
    ...config.admission,
    onShed: (reason) => app.locals.metrics.observeShed(reason),
  });
  app.locals.metrics.watchAdmission(admission);
  const server = http.createServer(admitted(admission, app));
  server.on("clientError", clientErrorHandler(logger)); // unparsable requests get a JSON 4xx too
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10000;
  // No deadline for a whole request: POST /experts/:name/stream reads a stream
  // of any length. A client that sends or reads nothing for this long is cut.
  server.requestTimeout = 0;
  server.timeout = Math.max(30000, config.rpcTimeoutMs + 10000);

  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  logger.info({ url, endpoint: config.endpoint, auth: Boolean(config.token), bodyLimit: config.bodyLimit, rpcTimeoutMs: config.rpcTimeoutMs, coalesce: config.coalesce, admission: config.admission }, "expertd bridge listening");
  // Learn the server's state (and expert names) now rather than on the first request.
  rpc.probe().catch(() => {});

  let closing = null;
  const close = () => {
    if (closing) return closing;
    closing = (async () => {
      const drained = new Promise((resolve) => server.close(resolve));
      server.closeIdleConnections();
      let timer;
      const timedOut = new Promise((resolve) => {
        timer = setTimeout(() => resolve("timeout"), config.shutdownTimeoutMs);
      });
      if ((await Promise.race([drained, timedOut])) === "timeout") {
        logger.warn({ shutdownTimeoutMs: config.shutdownTimeoutMs }, "closing connections still open");
        server.closeAllConnections();
        await drained;
      }
      clearTimeout(timer);
      admission.close();
      await rpc.close();
    })();
    return closing;
  };
  return { server, rpc, url, close, admission };
}

/** Run as a program: exit 1 on a bad or unsafe configuration (2 on a malformed EXPERTD_ENDPOINT, as the expertd commands). */
async function main() {
  let config;
  try {
    config = loadConfig(process.env);
    assertSafeToListen(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`expertd bridge: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    throw err;
  }
  const { logger, flush } = processLogger(config.logLevel);
  const exit = (code) => exitProcess(flush, code);
  let bridge;
  try {
    bridge = await start(config, { logger });
  } catch (err) {
    logger.fatal({ err }, "cannot start");
    process.stderr.write(`expertd bridge: cannot start: ${err.message}\n`);
    await exit(1);
    return;
  }
  let signals = 0;
  const onSignal = async (signal) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, "second signal: exiting now");
      await exit(1);
      return;
    }
    logger.info({ signal }, "shutting down: finishing in-flight requests");
    await bridge.close();
    // The spans recorded so far go out before the exit (tracing on only; at most a few seconds).
    await Promise.race([tracing.shutdown().catch(() => {}), new Promise((r) => setTimeout(r, 3000).unref())]);
    logger.info("stopped");
    await exit(0);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

if (require.main === module) {
  main();
}

module.exports = { start, main };
