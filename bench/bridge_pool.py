"""The bridge's connection pool: HTTP calls/s through the bridge against ``--workers 2``.

Two bridges (``node express_bridge/src/server.js``) in front of one
``expertd serve --workers 2`` serving ``vader`` (CPU-bound, no TensorFlow):
one with ``EXPERTD_CONNECTIONS=1`` (every call on one connection, so on one
worker), one with the default pool. wrk POSTs ``/experts/vader`` at
concurrency 64; the arms alternate round by round (A, B, A, B ...); medians.
Each worker's own ``stats()`` counts the calls it ran during the rounds.

    .venv/bin/python -m bench.bridge_pool [--rounds 3] [--duration 5]

writes bench/RESULTS-bridge-pool.md.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
from pathlib import Path

from bench.common import BENCH, ROOT, TMP, child_env, free_port, interleaved, load_texts, ratio
from bench.scale import Procs, serve, wait_workers
from bench.web import run_wrk, write_bodies

CONFIG = ROOT / "tests" / "vader_experts.yaml"
BRIDGE = ROOT / "express_bridge" / "src" / "server.js"
RESULTS = BENCH / "RESULTS-bridge-pool.md"
CONCURRENCY = 64
#: The arms: the bridge's EXPERTD_CONNECTIONS ("" = its default).
ARMS = {"pool of 1": "1", "default pool (4)": ""}


def start_bridge(procs: Procs, name: str, endpoint: str, connections: str) -> str:
    """Start a bridge process in front of ``endpoint``; its URL once /healthz answers 200."""
    port = free_port()
    env = child_env(HOST="127.0.0.1", PORT=str(port), EXPERTD_ENDPOINT=endpoint,
                    LOG_LEVEL="warn", EXPERTD_CONNECTIONS=connections)
    proc = procs.start(name, ["node", str(BRIDGE)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {procs.log(name)}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer /healthz")


def worker_calls(endpoint: str) -> dict[int, int]:
    """``{pid: vader calls}`` of each of the 2 workers, from its own stats() on a fresh connection."""
    from clients.wire import connect

    seen: dict[int, int] = {}
    for _ in range(200):
        with connect(endpoint, timeout=10) as conn:
            pid = conn.call("health")["pid"]
            seen[pid] = conn.call("stats")["experts"]["vader"]["calls"]
        if len(seen) == 2:
            break
    return seen


def run(rounds: int, duration: float) -> dict:
    """Both arms, interleaved; the table and how each arm's calls landed on the workers."""
    procs = Procs()
    try:
        endpoint = serve(procs, "pool-server", CONFIG, "--workers", "2")
        wait_workers(endpoint, procs.procs[-1], 2)
        urls = {arm: start_bridge(procs, f"pool-bridge-{i}", endpoint, c)
                for i, (arm, c) in enumerate(ARMS.items())}
        bodies = write_bodies(load_texts(), TMP / "bridge_pool" / "bodies.jsonl")
        spread: dict[str, list[list[int]]] = {arm: [] for arm in ARMS}

        def one_round(url: str, concurrency: int) -> dict:
            arm = next(a for a, u in urls.items() if u == url)
            before = worker_calls(endpoint)
            result = run_wrk(f"{url}/experts/vader", concurrency, duration, bodies)
            after = worker_calls(endpoint)
            spread[arm].append(sorted((after[p] - before.get(p, 0) for p in after), reverse=True))
            return result

        for url in urls.values():  # warm-up: connections made, JIT warm
            run_wrk(f"{url}/experts/vader", CONCURRENCY, 2, bodies)
        table = interleaved(urls, [CONCURRENCY], rounds, one_round, "arm", "rps")
        return {"table": table, "spread": spread, "rounds": rounds, "duration": duration,
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]}
    finally:
        procs.stop_all()


def render(r: dict) -> str:
    """The results as Markdown."""
    rows = {row["arm"]: row for row in r["table"].values()}
    base = rows["pool of 1"]["rps"]
    lines = [
        "# The bridge's connection pool (`python -m bench.bridge_pool`)", "",
        f"Run {r['when']} on {r['cpus']} cores shared with other work (1-minute load average "
        f"{r['loadavg']:.1f} at the end): compare only within this run. One "
        "`expertd serve --workers 2` (`vader`, CPU-bound, no TensorFlow); two bridge processes "
        "in front of it, `EXPERTD_CONNECTIONS=1` and the default; `wrk -t1 -c64` POSTs "
        f"`/experts/vader`; {r['rounds']} interleaved rounds of {r['duration']:g} s per arm; "
        "medians. wrk, the bridge and both workers share the same cores.", "",
        "| bridge | HTTP calls/s (median) | vs pool of 1 | p50 ms | p99 ms | rounds | non-2xx/errors |",
        "|---|---:|---:|---:|---:|---|---:|"]
    for arm, row in rows.items():
        lines.append(f"| {arm} | {row['rps']:,.0f} | {ratio(row['rps'], base):.2f}x | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{', '.join(f'{x:,.0f}' for x in row['rps_runs'])} | {row['errors']} |")
    lines += ["", "RPC calls (`opinions_batch`, the coalescer's batches) each worker ran "
              "during each round, from the workers' own `stats()`:", ""]
    for arm, rounds in r["spread"].items():
        lines.append(f"- {arm}: {'; '.join(' / '.join(str(n) for n in split) for split in rounds)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write bench/RESULTS-bridge-pool.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = run(args.rounds, args.duration)
    text = render(result)
    Path(RESULTS).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
