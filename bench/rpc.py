"""Section 3: single-document ``sentiment`` calls over zerorpc, micro-batching on vs off.

Each run is a fresh ``python -m bench.load`` process (stock zerorpc client,
gevent greenlets). Rounds interleave every (concurrency, server) pair, so
"on" and "off" see the same machine: on, off, on, off, ...
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.common import PYTHON, ROOT, child_env, interleaved, median, ratio


def load_run(endpoint: str, concurrency: int, duration: float, warmup: float,
             texts_path: Path) -> dict:
    """One load-generator process against ``endpoint``; its JSON result."""
    command = [PYTHON, "-m", "bench.load", "--endpoint", endpoint, "--concurrency",
               str(concurrency), "--duration", str(duration), "--warmup", str(warmup),
               "--texts", str(texts_path)]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=duration + warmup + 90)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def batching_on_off(endpoints: dict[str, str], concurrencies: list[int], rounds: int,
                    duration: float, warmup: float, texts_path: Path) -> dict:
    """Medians over ``rounds`` of calls/s, p50 and p99 per (arm, concurrency)."""
    table = interleaved(
        endpoints, concurrencies, rounds,
        lambda endpoint, concurrency: load_run(endpoint, concurrency, duration, warmup,
                                               texts_path),
        label="arm", rate="calls_per_s",
        extra=lambda items: {"first_error": next(
            (r["first_error"] for r in items if r["first_error"]), None)})
    arms = list(endpoints)
    if len(arms) == 2:
        for concurrency in concurrencies:
            a, b = table[f"{arms[0]}@{concurrency}"], table[f"{arms[1]}@{concurrency}"]
            a["throughput_vs_" + arms[1]] = ratio(a["calls_per_s"], b["calls_per_s"])
            a["paired_vs_" + arms[1]] = median(
                ratio(x, y) for x, y in zip(a["calls_per_s_runs"], b["calls_per_s_runs"]))
    return table
