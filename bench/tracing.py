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
machine is shared); the arms alternate round by round; medians.

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
from bench.common import BENCH, ROOT, TMP, child_env, free_port, interleaved, load_texts, ratio
from bench.scale import Procs, wait_health
from bench.web import run_wrk, write_bodies

CONFIG = ROOT / "tests" / "vader_experts.yaml"
RESULTS = BENCH / "RESULTS-tracing.md"
CONCURRENCY = 64
SAMPLERS = {"tracing off": None,
            "1% sampled": ("parentbased_traceidratio", "0.01"),
            "100% sampled": ("parentbased_always_on", "")}


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps nothing: 200 to every export, counted."""

    exports = 0
    received = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Sink.exports += 1
        Sink.received += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet."""


def otel_env(sampler, sink: str) -> dict:
    """The arm's standard OpenTelemetry variables (none: tracing off)."""
    if sampler is None:
        return {}
    name, arg = sampler
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg}


def run(rounds: int, duration: float) -> dict:
    """Every arm, interleaved: the table and what the sink received."""
    sink = ThreadingHTTPServer(("127.0.0.1", free_port()), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"
    procs = Procs()
    load_before = os.getloadavg()[0]
    saved = dict(os.environ)
    try:
        urls = {}
        for i, (arm, sampler) in enumerate(SAMPLERS.items()):
            for key in [k for k in os.environ if k.startswith("OTEL_")]:
                del os.environ[key]
            os.environ.update(otel_env(sampler, sink_url))  # child_env() copies os.environ
            os.environ["ADMIT_MAX_LAG_MS"] = "0"  # a shared machine lags: measure, do not shed
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            proc = procs.start(f"tracing-server-{i}", ["expertd", "serve", "--config", str(CONFIG),
                                                       "--bind", endpoint, "--log-level", "warning"],
                               env=child_env())
            wait_health(endpoint, proc)
            urls[arm] = start_bridge(procs, f"tracing-bridge-{i}", endpoint, "", "") + "/experts/vader"
        os.environ.clear()
        os.environ.update(saved)
        bodies = write_bodies(load_texts(), TMP / "tracing" / "bodies.jsonl")
        for url in urls.values():  # warm-up: connections made, JIT warm
            run_wrk(url, CONCURRENCY, 2, bodies)
        exports_before = Sink.exports
        table = interleaved(urls, [CONCURRENCY], rounds,
                            lambda url, concurrency: run_wrk(url, concurrency, duration, bodies),
                            "arm", "rps")
        time.sleep(6)  # the last batches of spans (every 5 s by default)
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
    one = rows["1% sampled"]
    lines += ["", f"At 1% sampling the bridge answered **{ratio(one['rps'], off['rps']) * 100:.0f}%** "
              f"of the calls/s it answered with tracing off (p99 {one['p99_ms']:.1f} ms vs "
              f"{off['p99_ms']:.1f} ms)."]
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
