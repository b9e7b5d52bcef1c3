"""Scale-out: calls/s on ``vader`` with 1 and 2 workers, and through HAProxy; memory per worker.

    .venv/bin/python -m bench.scale            # writes bench/RESULTS-scale.md

Three arms, all started before the first round and measured in interleaved
rounds (1 worker, 2 workers, HAProxy, 1 worker, ...), medians over rounds:

- ``expertd serve --workers 1`` (a supervisor and one worker);
- ``expertd serve --workers 2`` (two workers sharing the port);
- HAProxy (deploy/haproxy.cfg) in front of two single-process servers on
  two ports, standing in for two machines.

Load: concurrency 64 = ``CLIENTS`` client processes x ``CONNECTIONS`` connections
each x ``WINDOW`` calls outstanding per connection, each call one document to
the CPU-bound ``vader`` expert. Balancing is per connection (the kernel spreads
new connections over the workers; HAProxy per connection, leastconn), so the
load opens 16 connections and the report shows how they landed. The clients
are pipelined raw-socket zerorpc clients (``clients.wire``), much cheaper than
a gevent zerorpc client, but they run on the same 2 cores as the servers.

Memory: RSS and PSS (proportional share of pages shared between processes)
of each worker of a 2-worker server, for the vader-only experts file and for
the default one (TensorFlow models), against one single-process server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (BENCH, EXPERTD, PYTHON, ROOT, TMP, child_env, free_port, median,
                          ratio)

VADER_CONFIG = ROOT / "tests" / "vader_experts.yaml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
RESULTS = BENCH / "RESULTS-scale.md"
CLIENTS, CONNECTIONS, WINDOW = 4, 4, 4  # 4 x 4 x 4 = 64 calls in flight
TEXTS = ["The food was great but the service was painfully slow.",
         "I do not like this at all, it is awful and boring.",
         "What a wonderful, surprising and genuinely funny film!",
         "It is okay, nothing special, neither good nor bad."]


# -- the client process -------------------------------------------------------------


def client_main(endpoint: str, connections: int, window: int, duration: float,
                warmup: float) -> dict:
    """Keep ``window`` calls in flight on each of ``connections``; count the measured window."""
    from clients.wire import connect

    conns = [connect(endpoint, timeout=30) for _ in range(connections)]
    pids = [c.call("health")["pid"] for c in conns]
    queues = [[c.send("vader", {"text": TEXTS[i % len(TEXTS)]}) for i in range(window)]
              for c in conns]
    began = time.perf_counter()
    start, end = began + warmup, began + warmup + duration
    calls = errors = 0
    k = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for conn, queue in zip(conns, queues):
            try:
                conn.receive(queue.pop(0))
                if time.perf_counter() >= start:
                    calls += 1
            except Exception:
                errors += 1
            k += 1
            queue.append(conn.send("vader", {"text": TEXTS[k % len(TEXTS)]}))
    for conn, queue in zip(conns, queues):
        for message_id in queue:
            try:
                conn.receive(message_id)
            except Exception:
                pass
        conn.close()
    return {"calls": calls, "seconds": duration, "errors": errors, "pids": pids}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_round(endpoint: str, duration: float, warmup: float, server_pids: list[int]) -> dict:
    """``CLIENTS`` client processes at once; their calls/s summed, the connections' workers.

    Also the cores the servers (``server_pids``) and the clients kept busy.
    """
    server_before = sum(cpu_seconds(pid) for pid in server_pids)
    clients_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    command = [PYTHON, "-m", "bench.scale", "--client", endpoint, "--duration", str(duration),
               "--warmup", str(warmup)]
    procs = [subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(CLIENTS)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration + warmup + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"client failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - wall
    clients_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cores = (sum(cpu_seconds(pid) for pid in server_pids) - server_before) / wall
    client_cores = (clients_after.ru_utime + clients_after.ru_stime - clients_before.ru_utime
                    - clients_before.ru_stime) / wall
    pids: dict[int, int] = {}
    for r in results:
        for pid in r["pids"]:
            pids[pid] = pids.get(pid, 0) + 1
    return {"calls_per_s": sum(r["calls"] for r in results) / duration,
            "errors": sum(r["errors"] for r in results),
            "split": sorted(pids.values(), reverse=True),
            "server_cores": server_cores, "client_cores": client_cores}


# -- servers ------------------------------------------------------------------------------


class Procs:
    """Processes started by the benchmark, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self) -> None:
        """Logs go under bench/tmp/scale/."""
        self.procs: list[subprocess.Popen] = []
        self.logs = TMP / "scale"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        """Start ``command``, logging to ``<name>.log``."""
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(command, cwd=ROOT, env=env or child_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        proc.name = name
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        """What ``name`` has logged."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM, wait, SIGKILL."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        """Stop every process, newest first."""
        for proc in reversed(self.procs):
            self.stop(proc)


def serve(procs: Procs, name: str, config: Path, *extra: str) -> str:
    """Start ``expertd serve`` on a free port; its endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    procs.start(name, [EXPERTD, "serve", "--config", str(config), "--bind", endpoint,
                       "--log-level", "warning", *extra])
    return endpoint


def wait_health(endpoint: str, proc: subprocess.Popen, timeout: float = 600.0) -> dict:
    """Poll ``health()`` until it answers."""
    from clients.wire import CallTimeout, ServerUnavailable, connect

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with status {proc.returncode}")
        try:
            with connect(endpoint, timeout=5) as conn:
                return conn.call("health")
        except (ServerUnavailable, CallTimeout):
            time.sleep(0.3)
    raise RuntimeError(f"{proc.name} not ready after {timeout} s")


def wait_workers(endpoint: str, proc: subprocess.Popen, count: int,
                 timeout: float = 600.0) -> list[int]:
    """The worker pids of a supervised server, once ``count`` answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        seen.add(wait_health(endpoint, proc, timeout)["pid"])
    if len(seen) < count:
        raise RuntimeError(f"{proc.name}: only {len(seen)} of {count} workers answered")
    return sorted(seen)


def memory_kib(pid: int) -> dict:
    """RSS and PSS of one process, KiB (from /proc)."""
    out = {}
    for path, key in ((f"/proc/{pid}/status", "VmRSS"), (f"/proc/{pid}/smaps_rollup", "Pss")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key + ":"):
                    out[key] = int(line.split()[1])
        except OSError:
            pass
    return {"rss_kib": out.get("VmRSS"), "pss_kib": out.get("Pss")}


def memory_section(procs: Procs, name: str, config: Path) -> dict:
    """Memory of a single-process server and of each worker (and the supervisor) of 2."""
    single_ep = serve(procs, f"{name}-single", config)
    single = procs.procs[-1]
    pair_ep = serve(procs, f"{name}-2workers", config, "--workers", "2")
    pair = procs.procs[-1]
    single_pid = wait_health(single_ep, single)["pid"]
    workers = wait_workers(pair_ep, pair, 2)
    time.sleep(2.0)
    result = {"single": memory_kib(single_pid), "supervisor": memory_kib(pair.pid),
              "workers": [memory_kib(pid) for pid in workers]}
    procs.stop(single)
    procs.stop(pair)
    return result


# -- the run ------------------------------------------------------------------------------


def run(rounds: int, duration: float, warmup: float, with_tf: bool) -> dict:
    """Start the arms, measure interleaved rounds, measure memory; the raw results."""
    procs = Procs()
    load_before = os.getloadavg()
    try:
        one_ep = serve(procs, "workers1", VADER_CONFIG, "--workers", "1")
        one = procs.procs[-1]
        two_ep = serve(procs, "workers2", VADER_CONFIG, "--workers", "2")
        two = procs.procs[-1]
        backends = []
        for name in ("machine-a", "machine-b"):
            health_port = free_port()
            endpoint = serve(procs, name, VADER_CONFIG, "--health-port", str(health_port))
            backends.append((endpoint, health_port, procs.procs[-1]))
        front = free_port()
        env = child_env(EXPERTD_LISTEN=f"127.0.0.1:{front}")
        for letter, (endpoint, health_port, _) in zip("AB", backends):
            env[f"EXPERTD_{letter}"] = endpoint.removeprefix("tcp://")
            env[f"EXPERTD_{letter}_HEALTH"] = str(health_port)
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        proxy = procs.start("haproxy", [haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env)
        one_pids = wait_workers(one_ep, one, 1)
        two_pids = wait_workers(two_ep, two, 2)
        machine_pids = [wait_health(endpoint, proc)["pid"] for endpoint, _, proc in backends]
        proxy_ep = f"tcp://127.0.0.1:{front}"
        wait_health(proxy_ep, proxy)
        time.sleep(2.5)  # HAProxy's first health checks
        arms = {"1 worker": (one_ep, one_pids), "2 workers": (two_ep, two_pids),
                "HAProxy, 2 servers x 1": (proxy_ep, machine_pids + [proxy.pid])}
        runs: dict[str, list[dict]] = {arm: [] for arm in arms}
        for r in range(rounds):
            for arm, (endpoint, pids) in arms.items():
                result = load_round(endpoint, duration, warmup, pids)
                runs[arm].append(result)
                print(f"round {r + 1}/{rounds} {arm}: {result['calls_per_s']:.0f} calls/s "
                      f"(connections per process {result['split']}, errors {result['errors']})",
                      file=sys.stderr)
        load_after = os.getloadavg()
        procs.stop_all()
        procs.procs.clear()
        memory = {"vader": memory_section(procs, "mem-vader", VADER_CONFIG)}
        if with_tf:
            memory["default"] = memory_section(procs, "mem-default",
                                               ROOT / "config" / "experts.yaml")
    finally:
        procs.stop_all()
    return {"runs": runs, "memory": memory, "rounds": rounds, "duration": duration,
            "warmup": warmup, "cpus": os.cpu_count(),
            "loadavg": [round(load_before[0], 2), round(load_after[0], 2)],
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def render(r: dict) -> str:
    """The results as Markdown."""
    med = {arm: median(x["calls_per_s"] for x in runs) for arm, runs in r["runs"].items()}
    one, two, proxy = med["1 worker"], med["2 workers"], med["HAProxy, 2 servers x 1"]
    lines = [
        "# Scale-out benchmark (`python -m bench.scale`)", "",
        f"Run {r['when']} on {r['cpus']} cores (shared with other work: orders of magnitude, "
        f"compare only within this run). {r['rounds']} interleaved rounds of "
        f"{r['duration']:g} s (after {r['warmup']:g} s warm-up) per arm; medians. "
        f"1-minute load average of the machine: {r['loadavg'][0]} before the rounds, "
        f"{r['loadavg'][1]} after them.", "",
        f"Load: concurrency 64 = {CLIENTS} client processes x {CONNECTIONS} connections x "
        f"{WINDOW} calls in flight, one `vader` document per call (CPU-bound, no TensorFlow). "
        "The clients run on the same cores as the servers.", "",
        "## Calls per second, concurrency 64, `vader`", "",
        "| arm | calls/s (median) | vs 1 worker | rounds | errors |",
        "|---|---:|---:|---|---:|"]
    for arm, runs in r["runs"].items():
        each = ", ".join(f"{x['calls_per_s']:,.0f}" for x in runs)
        lines.append(f"| {arm} | {med[arm]:,.0f} | {ratio(med[arm], one):.2f}x | {each} | "
                     f"{sum(x['errors'] for x in runs)} |")
    lines += ["", "Cores kept busy during a round (median; CPU seconds / wall seconds, "
              "including the clients' start-up and warm-up): servers (the workers; for "
              "HAProxy the two servers and HAProxy) and the client processes.", "",
              "| arm | server cores | client cores | calls per server core-second |",
              "|---|---:|---:|---:|"]
    for arm, runs in r["runs"].items():
        cores = median(x["server_cores"] for x in runs)
        lines.append(f"| {arm} | {cores:.2f} | {median(x['client_cores'] for x in runs):.2f} | "
                     f"{median(x['calls_per_s'] / x['server_cores'] for x in runs):,.0f} |")
    busy = {arm: median(x["server_cores"] for x in runs) for arm, runs in r["runs"].items()}
    lines += ["", f"Two workers can use two cores only when the machine has them to give: here "
              f"the 2 workers together got {busy['2 workers']:.2f} cores "
              f"(1 worker: {busy['1 worker']:.2f}), so the other work on the machine, not "
              f"the number of workers, set the ceiling of this run."]
    lines += ["", "How the 16 connections landed (connections per worker or server, per round):", ""]
    for arm, runs in r["runs"].items():
        lines.append(f"- {arm}: {'; '.join('/'.join(map(str, x['split'])) for x in runs)}")
    goal = ratio(two, one)
    lines += ["", f"**2 workers / 1 worker = {goal:.2f}x** (the issue's goal: >= 1.6x). "
              f"HAProxy with two single-process servers / 1 worker = {ratio(proxy, one):.2f}x.",
              ""]
    lines += ["## Memory per worker", "",
              "RSS counts pages shared with other processes (libraries, copy-on-write); "
              "PSS splits shared pages between the processes that share them.", "",
              "| experts file | process | RSS MiB | PSS MiB |", "|---|---|---:|---:|"]
    for name, m in r["memory"].items():
        rows = [("single-process server", m["single"]), ("supervisor (of 2)", m["supervisor"])]
        rows += [(f"worker {i}", w) for i, w in enumerate(m["workers"])]
        for label, mem in rows:
            lines.append(f"| {name} | {label} | {mib(mem['rss_kib'])} | {mib(mem['pss_kib'])} |")
    lines += ["", "Memory per extra worker is about one worker's RSS (each worker loads its own "
              "experts; nothing but the interpreter's read-only pages is shared).", ""]
    return "\n".join(lines)


def mib(kib: int | None) -> str:
    """KiB as MiB, one decimal ("?" when unknown)."""
    return "?" if kib is None else f"{kib / 1024:.1f}"


def main(argv: list[str] | None = None) -> None:
    """``--client`` runs one load process; otherwise the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--no-tensorflow", action="store_true",
                        help="Skip the memory of workers serving the default (TensorFlow) experts.")
    args = parser.parse_args(argv)
    if args.client:
        result = client_main(args.client, CONNECTIONS, WINDOW, args.duration, args.warmup)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    results = run(args.rounds, args.duration, args.warmup, not args.no_tensorflow)
    (TMP / "scale").mkdir(parents=True, exist_ok=True)
    (TMP / "scale" / "results.json").write_text(json.dumps(results, indent=1))
    RESULTS.write_text(render(results))
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
