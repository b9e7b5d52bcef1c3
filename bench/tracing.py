"""What tracing costs the bridge: HTTP calls/s and p99 with tracing off, at 1% and at 100% sampling.

Three arms, each a server (``vader``: CPU-bound, no TensorFlow) and a bridge
process in front of it, started with the arm's standard OpenTelemetry
variables: off (none set), 1% (``OTEL_TRACES_EXPORTER=otlp``,
``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.01``)
and 100% (``parentbased_always_on``). The spans go over OTLP/HTTP to a sink in
this process that answers every export 200 and counts them (so export is
paid, no backend's own work is). wrk POSTs ``/experts/vader`` at concurrency
64 with no ``traceparent`` (the bridge's sampler decides, the server follows);
the bridge's shedding on event-loop lag is off (``ADMIT_MAX_LAG_MS=0``: the
machine is shared); the arms alternate round by round; medians. Calls/s
moves by a fifth from round to round on a shared machine, so each round also
measures the CPU time (user + system, from ``/proc/PID/stat``, the process
and its live descendants) the bridge and the server spent per answered call:
what tracing adds to each call's work, whatever else the machine runs.

    .venv/bin/python -m bench.tracing [--rounds 3] [--duration 5]

writes bench/RESULTS-tracing.md.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.bridge_pool import start_bridge
from bench.common import (BENCH, ROOT, TMP, child_env, free_port, interleaved, load_texts, median, ratio,
                          tree_cpu_seconds)
from bench.scale import Procs, wait_health
from bench.web import run_wrk, write_bodies

CONFIG = ROOT / "tests" / "vader_experts.yaml"
RESULTS = BENCH / "RESULTS-tracing.md"
CONCURRENCY = 64
SAMPLERS = {"tracing off": None,
            "1% sampled": ("parentbased_traceidratio", "0.01"),
            "100% sampled": ("parentbased_always_on", "")}


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps nothing: 200 to every export, counted, and the spans
    counted per arm (the first path segment) and service."""

    exports = 0
    received = 0
    spans: dict = {}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self._body()
        Sink.exports += 1
        Sink.received += len(body)
        arm = self.path.strip("/").split("/")[0]
        try:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "?")
                count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
                Sink.spans[(arm, service)] = Sink.spans.get((arm, service), 0) + count
        except Exception:  # noqa: BLE001 - counting is a bonus; the export is answered anyway
            pass
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        """The request's body, sent with a length or in chunks (Node's exporter sends chunks)."""
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk

    def log_message(self, *args) -> None:
        """Quiet."""


def otel_env(sampler, sink: str) -> dict:
    """The arm's standard OpenTelemetry variables (none: tracing off); ``sink`` ends with the arm's path."""
    if sampler is None:
        return {}
    name, arg = sampler
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg}


def measured_round(url: str, pids: dict, duration: float, bodies: Path) -> dict:
    """One wrk round, plus each process's CPU microseconds per answered (2xx) call."""
    before = {role: tree_cpu_seconds(pid) for role, pid in pids.items()}
    result = run_wrk(url, CONCURRENCY, duration, bodies)
    answered = max(1, result["requests"] - result["status_errors"])
    for role, pid in pids.items():
        result[f"{role}_cpu_us"] = (tree_cpu_seconds(pid) - before[role]) * 1e6 / answered
    return result


def cpu_columns(items: list[dict]) -> dict:
    """The median CPU per call of each process over an arm's rounds (``interleaved``'s ``extra``)."""
    columns = {"answered": sum(item["requests"] - item["status_errors"] for item in items)}
    for role in ("bridge", "server"):
        columns[f"{role}_cpu_us"] = median(item[f"{role}_cpu_us"] for item in items)
        columns[f"{role}_cpu_runs"] = [round(item[f"{role}_cpu_us"]) for item in items]
    return columns


def run(rounds: int, duration: float) -> dict:
    """Every arm, interleaved: the table and what the sink received."""
    sink = ThreadingHTTPServer(("127.0.0.1", free_port()), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"
    procs = Procs()
    load_before = os.getloadavg()[0]
    arms = {arm: f"arm{i}" for i, arm in enumerate(SAMPLERS)}
    saved = dict(os.environ)
    try:
        urls, pids = {}, {}
        for i, (arm, sampler) in enumerate(SAMPLERS.items()):
            for key in [k for k in os.environ if k.startswith("OTEL_")]:
                del os.environ[key]
            os.environ.update(otel_env(sampler, f"{sink_url}/arm{i}"))  # child_env() copies os.environ
            os.environ["ADMIT_MAX_LAG_MS"] = "0"  # a shared machine lags: measure, do not shed
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            proc = procs.start(f"tracing-server-{i}", ["expertd", "serve", "--config", str(CONFIG),
                                                       "--bind", endpoint, "--log-level", "warning"],
                               env=child_env())
            wait_health(endpoint, proc)
            urls[arm] = start_bridge(procs, f"tracing-bridge-{i}", endpoint, "", "") + "/experts/vader"
            pids[urls[arm]] = {"bridge": procs.procs[-1].pid, "server": proc.pid}
        os.environ.clear()
        os.environ.update(saved)
        bodies = write_bodies(load_texts(), TMP / "tracing" / "bodies.jsonl")
        for url in urls.values():  # warm-up: connections made, JIT warm
            run_wrk(url, CONCURRENCY, 2, bodies)
        exports_before = Sink.exports
        spans_before = dict(Sink.spans)
        table = interleaved(urls, [CONCURRENCY], rounds,
                            lambda url, _: measured_round(url, pids[url], duration, bodies),
                            "arm", "rps", cpu_columns)
        time.sleep(6)  # the last batches of spans (every 5 s by default)
        for row in table.values():  # spans exported per 1,000 answered calls, per service
            answered = row.pop("answered")
            for role, service in (("bridge", "expertd-bridge"), ("server", "expertd")):
                key = (arms[row["arm"]], service)
                row[f"{role}_spans_per_1k"] = (Sink.spans.get(key, 0) - spans_before.get(key, 0)) \
                    * 1000 / max(1, answered)
        return {"table": table, "rounds": rounds, "duration": duration,
                "exports": Sink.exports - exports_before, "received_mib": Sink.received / 2**20,
                "loadavg_before": load_before, "loadavg": os.getloadavg()[0],
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        procs.stop_all()
        sink.shutdown()


def render(r: dict) -> str:
    """The results as Markdown."""
    rows = {row["arm"]: row for row in r["table"].values()}
    off = rows["tracing off"]
    lines = [
        "# What tracing costs (`python -m bench.tracing`)", "",
        f"Run {r['when']} on {r['cpus']} cores shared with other work (1-minute load average "
        f"{r['loadavg_before']:.1f} before, {r['loadavg']:.1f} at the end): compare only within "
        "this run. Per arm one `expertd serve` (`vader`) and one bridge, started with the arm's "
        "standard OpenTelemetry variables; spans exported over OTLP/HTTP (protobuf) to a sink that "
        "answers 200 and keeps nothing; `wrk -t1 -c64` POSTs `/experts/vader` without a "
        "`traceparent`; the bridges shed on no event-loop lag (`ADMIT_MAX_LAG_MS=0`); "
        f"{r['rounds']} interleaved rounds of {r['duration']:g} s per arm; medians. "
        f"The sink received {r['exports']:,} exports ({r['received_mib']:.1f} MiB).", "",
        "## Tracing off, 1% and 100% sampled", "",
        "| tracing | HTTP calls/s (median) | vs off | p50 ms | p99 ms | rounds | non-2xx/errors |",
        "|---|---:|---:|---:|---:|---|---:|"]
    for arm, row in rows.items():
        lines.append(f"| {arm} | {row['rps']:,.0f} | {ratio(row['rps'], off['rps']):.2f}x | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{', '.join(f'{x:,.0f}' for x in row['rps_runs'])} | {row['errors']} |")
    one, full = rows["1% sampled"], rows["100% sampled"]
    lines += ["", f"At 1% sampling the bridge answered **{ratio(one['rps'], off['rps']) * 100:.0f}%** "
              f"of the calls/s it answered with tracing off (p99 {one['p99_ms']:.1f} ms vs "
              f"{off['p99_ms']:.1f} ms).", "",
              "## CPU per answered call", "",
              "CPU time (user + system) each process spent per answered call, median over the "
              "rounds (each round's in the last columns); less noisy than calls/s: what the other "
              "work on the machine takes does not count.", "",
              "| tracing | bridge µs/call | vs off | server µs/call | vs off | bridge rounds "
              "| server rounds |",
              "|---|---:|---:|---:|---:|---|---|"]
    for arm, row in rows.items():
        bridge, server = row["bridge_cpu_us"], row["server_cpu_us"]
        lines.append(f"| {arm} | {bridge:.0f} | {ratio(bridge, off['bridge_cpu_us']):.2f}x | "
                     f"{server:.0f} | {ratio(server, off['server_cpu_us']):.2f}x | "
                     f"{', '.join(str(x) for x in row['bridge_cpu_runs'])} | "
                     f"{', '.join(str(x) for x in row['server_cpu_runs'])} |")
    lines += ["", "Spans exported per 1,000 answered calls (all rounds): "
              + "; ".join(f"{arm}: bridge {row['bridge_spans_per_1k']:,.0f}, server "
                          f"{row['server_spans_per_1k']:,.0f}" for arm, row in rows.items()) + ".",
              "", "At 1% sampling the server recorded "
              f"**{ratio(one['server_spans_per_1k'], full['server_spans_per_1k']) * 100:.0f}%** "
              "of the spans it records at 100% sampling: a call the bridge coalesced from several "
              "requests is recorded when one of them is sampled."]
    both_off = off["bridge_cpu_us"] + off["server_cpu_us"]
    both_one = one["bridge_cpu_us"] + one["server_cpu_us"]
    lines += ["", f"At 1% sampling the two processes spent **{ratio(both_one, both_off):.2f}x** the CPU "
              f"per call of tracing off ({both_one:.0f} µs vs {both_off:.0f} µs)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write bench/RESULTS-tracing.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    text = render(run(args.rounds, args.duration))
    Path(RESULTS).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
