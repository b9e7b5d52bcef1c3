"""HTTP load with wrk (Debian's package): POST JSON, full latency distribution.

``run_wrk`` runs ``wrk -t1 -cN -dS --latency -s bench/post.lua`` (one load
thread, as in the anchor of shared/NOTES.md) and reads the line the script's
``done`` prints: requests, duration, p50/p90/p99/max latency from wrk's
histogram of every response, and error counts (non-2xx included).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.common import BENCH, interleaved

SCRIPT = BENCH / "post.lua"


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


def write_bodies(texts: list[str], path: Path, count: int = 500) -> Path:
    """One JSON body ``{"text": ...}`` per line for the Lua script to cycle through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for text in texts[:count]:
            out.write(json.dumps({"text": text}, ensure_ascii=True) + "\n")
    return path


def run_wrk(url: str, concurrency: int, duration: float, bodies: Path,
            threads: int = 1) -> dict:
    """Load ``url`` for ``duration`` seconds; return requests/s, p50/p99 (ms) and errors."""
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
               "--timeout", "10s", "--latency", "-s", str(SCRIPT), url, "--", str(bodies)]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish: {' '.join(command)}") from None
    line = next((line_ for line_ in done.stdout.splitlines() if line_.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip()}\n{done.stdout}")
    raw = json.loads(line[len("BENCH_JSON "):])
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors",
                                   "status_errors", "timeouts"))
    return {
        "requests": raw["requests"],
        "seconds": seconds,
        "rps": raw["requests"] / seconds if seconds else float("nan"),
        "p50_ms": raw["p50_us"] / 1000.0,
        "p90_ms": raw["p90_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0,
        "max_ms": raw["max_us"] / 1000.0,
        "errors": errors,
        "status_errors": raw["status_errors"],
    }


def compare(urls: dict[str, str], concurrencies: list[int], rounds: int, duration: float,
            bodies: Path, warmup: float = 2.0) -> dict:
    """Section 4: the same POST against every server, interleaved in rounds.

    Each server first gets ``warmup`` seconds of load at the highest
    concurrency; then every round loads each (concurrency, server) pair once.
    """
    for url in urls.values():
        run_wrk(url, max(concurrencies), warmup, bodies)
    return interleaved(urls, concurrencies, rounds,
                       lambda url, concurrency: run_wrk(url, concurrency, duration, bodies),
                       label="server", rate="rps")


def versus(table: dict, name: str, base: str, concurrency: int) -> dict:
    """Throughput and p99 of server ``name`` relative to ``base`` at one concurrency.

    ``rps`` is the ratio of the medians; ``rps_paired`` the median of the
    per-round ratios (each round ran both back to back).
    """
    from bench.common import median, ratio

    a, b = table.get(f"{name}@{concurrency}"), table.get(f"{base}@{concurrency}")
    if not a or not b:
        return {"rps": float("nan"), "rps_paired": float("nan"), "p99": float("nan")}
    return {"rps": ratio(a["rps"], b["rps"]),
            "rps_paired": median(ratio(x, y) for x, y in zip(a["rps_runs"], b["rps_runs"])),
            "p99": ratio(a["p99_ms"], b["p99_ms"])}
