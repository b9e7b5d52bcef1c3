"""The bridge's connection pool: HTTP calls/s through the bridge against ``--workers 2``.

Two bridges (``node express_bridge/src/server.js``) in front of one
``expertd serve --workers 2`` serving ``vader`` (CPU-bound, no TensorFlow):
one with ``EXPERTD_CONNECTIONS=1`` (every call on one connection, so on one
worker), one with the default pool; both again with coalescing off
(``COALESCE_MAX=1``: one RPC call per request, so the server, not the bridge,
does most of the work). wrk POSTs ``/experts/vader`` at concurrency 64; the
arms alternate round by round (A, B, C, D, A, ...); medians.
Each worker's own ``stats()`` counts the calls it ran during the rounds.
Then the bridge's RPC client alone (bench/bridge_pool_rpc.js: no HTTP, no
wrk, coalescing off), pool of 1 vs the default, interleaved the same way.

    .venv/bin/python -m bench.bridge_pool [--rounds 3] [--duration 5]

writes bench/RESULTS-bridge-pool.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.common import (BENCH, ROOT, TMP, child_env, descendants, free_port, interleaved,
                          load_texts, median, ratio)
from bench.scale import Procs, cpu_seconds, serve, wait_workers
from bench.web import run_wrk, write_bodies

CONFIG = ROOT / "tests" / "vader_experts.yaml"
BRIDGE = ROOT / "express_bridge" / "src" / "server.js"
RESULTS = BENCH / "RESULTS-bridge-pool.md"
CONCURRENCY = 64
#: The arms: the bridge's EXPERTD_CONNECTIONS ("" = its default) and COALESCE_MAX ("" = default).
ARMS = {"pool of 1": ("1", ""), "default pool (4)": ("", ""),
        "pool of 1, coalescing off": ("1", "1"), "default pool (4), coalescing off": ("", "1")}
#: The row each arm is compared with.
BASELINE = {"pool of 1": "pool of 1", "default pool (4)": "pool of 1",
            "pool of 1, coalescing off": "pool of 1, coalescing off",
            "default pool (4), coalescing off": "pool of 1, coalescing off"}


def start_bridge(procs: Procs, name: str, endpoint: str, connections: str, coalesce: str) -> str:
    """Start a bridge process in front of ``endpoint``; its URL once /healthz answers 200."""
    port = free_port()
    env = child_env(HOST="127.0.0.1", PORT=str(port), EXPERTD_ENDPOINT=endpoint,
                    LOG_LEVEL="warn", EXPERTD_CONNECTIONS=connections, COALESCE_MAX=coalesce)
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


RPC_SCRIPT = BENCH / "bridge_pool_rpc.js"


def rpc_round(endpoint: str, connections: int, duration: float) -> dict:
    """One run of the RPC client alone: calls/s, Node CPU per call, workers reached."""
    done = subprocess.run(["node", str(RPC_SCRIPT), endpoint, str(connections), str(duration),
                           str(CONCURRENCY)], capture_output=True, text=True,
                          timeout=duration + 60, env=child_env(), cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{RPC_SCRIPT.name} failed: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_calls(endpoint: str) -> dict[int, int]:
    """``{pid: vader calls}`` of each of the 2 workers, from its own stats() on a fresh connection."""
    from expertd.clients.wire import connect

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
    load_before = os.getloadavg()[0]
    try:
        endpoint = serve(procs, "pool-server", CONFIG, "--workers", "2")
        supervisor = procs.procs[-1]
        wait_workers(endpoint, supervisor, 2)
        urls = {arm: start_bridge(procs, f"pool-bridge-{i}", endpoint, *settings)
                for i, (arm, settings) in enumerate(ARMS.items())}
        bridge_pid = {urls[arm]: procs.procs[-len(ARMS) + i].pid for i, arm in enumerate(ARMS)}
        bodies = write_bodies(load_texts(), TMP / "bridge_pool" / "bodies.jsonl")
        spread: dict[str, list[list[int]]] = {arm: [] for arm in ARMS}

        def one_round(url: str, concurrency: int) -> dict:
            arm = next(a for a, u in urls.items() if u == url)
            before = worker_calls(endpoint)
            servers = descendants(supervisor.pid)
            cpu0 = (cpu_seconds(bridge_pid[url]), sum(cpu_seconds(p) for p in servers))
            result = run_wrk(f"{url}/experts/vader", concurrency, duration, bodies)
            cpu1 = (cpu_seconds(bridge_pid[url]), sum(cpu_seconds(p) for p in servers))
            result["bridge_cores"] = (cpu1[0] - cpu0[0]) / result["seconds"]
            result["server_cores"] = (cpu1[1] - cpu0[1]) / result["seconds"]
            after = worker_calls(endpoint)
            spread[arm].append(sorted((after[p] - before.get(p, 0) for p in after), reverse=True))
            return result

        for url in urls.values():  # warm-up: connections made, JIT warm
            run_wrk(f"{url}/experts/vader", CONCURRENCY, 2, bodies)
        def cores(items: list[dict]) -> dict:
            return {k: median(x[k] for x in items) for k in ("bridge_cores", "server_cores")}

        table = interleaved(urls, [CONCURRENCY], rounds, one_round, "arm", "rps", extra=cores)
        rpc_runs: dict[int, list[dict]] = {1: [], 4: []}
        for _ in range(rounds):
            for connections in rpc_runs:
                rpc_runs[connections].append(rpc_round(endpoint, connections, duration))
        return {"table": table, "spread": spread, "rpc": rpc_runs, "rounds": rounds,
                "duration": duration, "loadavg_before": load_before,
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0]}
    finally:
        procs.stop_all()


def render(r: dict) -> str:
    """The results as Markdown."""
    rows = {row["arm"]: row for row in r["table"].values()}
    lines = [
        "# The bridge's connection pool (`python -m bench.bridge_pool`)", "",
        f"Run {r['when']} on {r['cpus']} cores shared with other work (1-minute load average "
        f"{r['loadavg_before']:.1f} before, {r['loadavg']:.1f} at the end): compare only within "
        "this run. One "
        "`expertd serve --workers 2` (`vader`, CPU-bound, no TensorFlow); two bridge processes "
        "in front of it, `EXPERTD_CONNECTIONS=1` and the default, each with coalescing on (the "
        "default) and off (`COALESCE_MAX=1`: one RPC call per request); `wrk -t1 -c64` POSTs "
        f"`/experts/vader`; {r['rounds']} interleaved rounds of {r['duration']:g} s per arm; "
        "medians. wrk, the bridge and both workers share the same cores.", "",
        "| bridge | HTTP calls/s (median) | vs pool of 1 (same coalescing) | p50 ms | p99 ms "
        "| bridge cores | server cores | rounds | non-2xx/errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for arm, row in rows.items():
        base = rows[BASELINE[arm]]["rps"]
        lines.append(f"| {arm} | {row['rps']:,.0f} | {ratio(row['rps'], base):.2f}x | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{row['bridge_cores']:.2f} | {row['server_cores']:.2f} | "
                     f"{', '.join(f'{x:,.0f}' for x in row['rps_runs'])} | {row['errors']} |")
    lines += ["", "Cores: CPU seconds per wall second during a round (median), of the bridge "
              "process and of the supervisor and its workers together; the rest of the 2 "
              "cores went to wrk and to the machine's other work.", ""]
    lines += ["RPC calls each worker ran during each round (with coalescing: "
              "`opinions_batch` batches), from the workers' own `stats()`:", ""]
    for arm, rounds in r["spread"].items():
        lines.append(f"- {arm}: {'; '.join(' / '.join(str(n) for n in split) for split in rounds)}")
    one = median(x["calls_per_s"] for x in r["rpc"][1])
    lines += ["", "## The RPC client alone", "",
              "`node bench/bridge_pool_rpc.js`: one `ExpertdClient` (coalescing off), 64 callers of "
              f"`opinion(\"vader\", doc)`, {r['duration']:g} s per round, no HTTP and no wrk; the "
              "arms alternate; medians.", "",
              "| connections | calls/s (median) | vs 1 | Node CPU per call (us) | workers reached | "
              "rounds | errors |", "|---|---:|---:|---:|---|---|---:|"]
    for connections, runs in r["rpc"].items():
        rate = median(x["calls_per_s"] for x in runs)
        each = ", ".join(f"{x['calls_per_s']:,.0f}" for x in runs)
        lines.append(f"| {connections} | {rate:,.0f} | {ratio(rate, one):.2f}x | "
                     f"{median(x['node_cpu_us_per_call'] for x in runs):.0f} | "
                     f"{', '.join(str(x['workers']) for x in runs)} | "
                     f"{each} | "
                     f"{sum(x['errors'] for x in runs)} |")
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
