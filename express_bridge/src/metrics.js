"use strict";
/**
 * Prometheus metrics (prom-client), on a registry of the app's own so that
 * several apps in one process (tests) do not collide.
 */

const promClient = require("prom-client");

/** Histogram buckets (seconds): 1 ms to 60 s. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Buckets of the coalesced batch size histogram (documents per RPC call). */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/**
 * Create the bridge's metrics.
 * @param {object} options
 * @param {{state: string, knownExperts?: Set<string>, on?: Function}} options.rpc the ExpertdClient
 *   (for the "server up" gauge, and its "batch" events: coalesced batch sizes)
 * @param {boolean} [options.defaultMetrics=true] also collect process metrics
 * @returns {{registry: promClient.Registry,
 *   observeRequest: (labels: {method: string, route: string, status: number, expert: string}, seconds: number) => void,
 *   observeRpc: (labels: {method: string, outcome: string}, seconds: number) => void,
 *   observeShed: (reason: string) => void, watchAdmission: (admission: object) => void}}
 */
function createMetrics({ rpc, defaultMetrics = true } = {}) {
  const registry = new promClient.Registry();
  if (defaultMetrics) promClient.collectDefaultMetrics({ register: registry });

  const requests = new promClient.Counter({
    name: "expertd_bridge_http_requests_total",
    help: "HTTP requests answered, by method, route, status and expert.",
    labelNames: ["method", "route", "status", "expert"],
    registers: [registry],
  });
  const duration = new promClient.Histogram({
    name: "expertd_bridge_http_request_duration_seconds",
    help: "HTTP request latency in seconds, by method, route, status and expert.",
    labelNames: ["method", "route", "status", "expert"],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const rpcDuration = new promClient.Histogram({
    name: "expertd_bridge_rpc_duration_seconds",
    help: "Latency of RPC calls to expertd in seconds, by method and outcome (ok, remote_error, timeout, unavailable, error).",
    labelNames: ["method", "outcome"],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  new promClient.Gauge({
    name: "expertd_bridge_server_up",
    help: "1 when the last check found expertd answering, 0 when it did not, -1 before any check.",
    registers: [registry],
    collect() {
      this.set(rpc && rpc.state === "up" ? 1 : rpc && rpc.state === "down" ? 0 : -1);
    },
  });

  const batchSize = new promClient.Histogram({
    name: "expertd_bridge_coalesced_batch_size",
    help: "Documents per RPC call made for POST /experts/:name (opinion calls coalesced per expert; 1: sent alone), by expert.",
    labelNames: ["expert"],
    buckets: BATCH_BUCKETS,
    registers: [registry],
  });
  if (rpc && typeof rpc.on === "function") {
    // Only names the server has reported become labels (cardinality).
    rpc.on("batch", (name, size) => {
      batchSize.observe({ expert: rpc.knownExperts && rpc.knownExperts.has(name) ? name : "(other)" }, size);
    });
  }

  const shed = new promClient.Counter({
    name: "expertd_bridge_shed_total",
    help: "Requests answered 503 Overloaded before Express, by reason (in_flight: ADMIT_MAX_IN_FLIGHT reached; streams: ADMIT_MAX_STREAMS reached; event_loop: lag over ADMIT_MAX_LAG_MS).",
    labelNames: ["reason"],
    registers: [registry],
  });

  return {
    registry,
    observeShed(reason) {
      shed.inc({ reason });
    },
    /** Gauges of the bridge's admission control (admission.js): limit, requests in flight, loop lag. */
    watchAdmission(admission) {
      const gauge = (name, help, read) => new promClient.Gauge({ name, help, registers: [registry], collect() {
        this.set(read());
      } });
      gauge("expertd_bridge_admission_limit", "Requests the bridge takes on at once now (adaptive up to ADMIT_MAX_IN_FLIGHT; 0: no bound).", () => admission.limit);
      gauge("expertd_bridge_admission_in_flight", "Requests admitted and not yet answered (NDJSON streams apart).", () => admission.inFlight);
      gauge("expertd_bridge_admission_streams", "NDJSON streams in progress (ADMIT_MAX_STREAMS sheds beyond it).", () => admission.streams);
      gauge("expertd_bridge_event_loop_lag_seconds", "Largest event-loop delay over the last sample (ADMIT_MAX_LAG_MS sheds above it).", () => admission.lagMs / 1000);
    },
    observeRequest({ method, route, status, expert }, seconds) {
      const labels = { method, route, status: String(status), expert: expert || "" };
      requests.inc(labels);
      duration.observe(labels, seconds);
    },
    observeRpc({ method, outcome }, seconds) {
      rpcDuration.observe({ method, outcome }, seconds);
    },
  };
}

module.exports = { createMetrics, LATENCY_BUCKETS, BATCH_BUCKETS };
