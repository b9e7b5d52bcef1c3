"""Scale-out: calls/s on ``vader`` with 1 and 2 workers, and through HAProxy; the stream
rate of one ``expertd pipe sentiment --lines`` against 1 and 2 workers; memory per worker.

    .venv/bin/python -m bench.scale            # writes bench/RESULTS-scale.md
    .venv/bin/python -m bench.scale --only stream --rounds 3   # one section, for development

Three arms, all started before the first round and measured in interleaved
rounds (1 worker, 2 workers, HAProxy, 1 worker, ...), medians over rounds:

- ``expertd serve --workers 1`` (a supervisor and one worker);
- ``expertd serve --workers 2`` (two workers sharing the port);
- HAProxy (deploy/haproxy.cfg) in front of two single-process servers on
  two ports, standing in for two machines.

Load: concurrency 64 = ``CLIENTS`` client processes x ``CONNECTIONS`` connections
each x ``WINDOW`` calls outstanding per connection, each call one document to
the CPU-bound ``vader`` expert; each connection is its own closed loop.
Balancing is per connection (the kernel spreads new connections over the
workers; HAProxy per connection, leastconn), so the load opens 16 connections
and the report shows how they landed. The clients are pipelined raw-socket
zerorpc clients (``clients.wire``), much cheaper than
a gevent zerorpc client, but they run on the same 2 cores as the servers.

Stream: 100,000 documents (VADER ground-truth sentences, cycled) through one
``expertd pipe sentiment --lines`` stage (spawn to exit, output to a file), against ``--workers 1`` and
``--workers 2`` servers of the sentiment expert alone (the default experts
file's entry), with the stage's default ``--connections 2`` and with
``--connections 1``; interleaved rounds, medians, and the CPU the stage and the
workers used.

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

from bench.common import (BENCH, EXPERTD, PYTHON, ROOT, TMP, child_env, cpu_seconds, free_port, median,
                          ratio)

VADER_CONFIG = ROOT / "tests" / "vader_experts.yaml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
RESULTS = BENCH / "RESULTS-scale.md"
CLIENTS, CONNECTIONS, WINDOW = 4, 4, 4  # 4 x 4 x 4 = 64 calls in flight
#: The issue's goals: 2 workers against 1 (calls/s), and one stage's stream (documents/s).
CALLS_GOAL, STREAM_GOAL = 1.6, 50_000
TEXTS = ["The food was great but the service was painfully slow.",
         "I do not like this at all, it is awful and boring.",
         "What a wonderful, surprising and genuinely funny film!",
         "It is okay, nothing special, neither good nor bad."]


# -- the client process -------------------------------------------------------------


def client_main(endpoint: str, connections: int, window: int, duration: float,
                warmup: float) -> dict:
    """Keep ``window`` calls in flight on each of ``connections``; count the measured window.

    Each connection is its own closed loop (a reply is answered by the next
    call on the connection it came from, whichever connection answers first),
    as independent callers would be: waiting on the connections in turn made
    every connection go at the pace of the slowest, so a worker that the kernel
    gave fewer connections idled while the other queued.
    """
    import selectors

    from expertd.clients.wire import ServerUnavailable, connect

    conns = [connect(endpoint, timeout=30) for _ in range(connections)]
    pids = [c.call("health")["pid"] for c in conns]
    k = 0

    def send(conn) -> str:
        nonlocal k
        k += 1
        return conn.send("vader", {"text": TEXTS[k % len(TEXTS)]})

    waiting = {conn: {send(conn) for _ in range(window)} for conn in conns}
    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn, selectors.EVENT_READ)
    began = time.perf_counter()
    start, end = began + warmup, began + warmup + duration
    calls = errors = 0
    while time.perf_counter() < end:
        for key, _ in selector.select(timeout=1.0):
            conn = key.fileobj
            try:
                ready = conn.collect()
            except ServerUnavailable:  # its worker went away: its calls are errors, it is done
                errors += len(waiting[conn])
                waiting[conn] = set()
                selector.unregister(conn)
                continue
            for message_id in ready & waiting[conn]:
                waiting[conn].discard(message_id)
                try:
                    conn.receive(message_id)
                    if time.perf_counter() >= start:
                        calls += 1
                except Exception:
                    errors += 1
                waiting[conn].add(send(conn))
    selector.close()
    for conn in conns:
        for message_id in waiting[conn]:
            try:
                conn.receive(message_id)
            except Exception:
                pass
        conn.close()
    return {"calls": calls, "seconds": duration, "errors": errors, "pids": pids}


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
    from expertd.clients.wire import CallTimeout, ServerUnavailable, connect

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


# -- the stream ---------------------------------------------------------------------------

#: Documents per stream run: long enough that the stage's start-up (about 60 ms, which
#: was 15% of a run of 20,000 documents) does not stand in for its rate.
STREAM_DOCS = 100_000
#: (arm, workers, --connections) of the stream section, measured in this order each round.
STREAM_ARMS = [("1 worker, --connections 1", 1, 1), ("1 worker, --connections 2", 1, 2),
               ("2 workers, --connections 1", 2, 1), ("2 workers, --connections 2", 2, 2)]


def sentiment_config() -> Path:
    """An experts file with only the default file's ``sentiment`` entry (paths made absolute)."""
    import yaml

    from bench.common import DEFAULT_CONFIG, MODEL_DIR

    entry = yaml.safe_load(DEFAULT_CONFIG.read_text())["experts"]["sentiment"]
    entry.setdefault("options", {})["model_dir"] = str(MODEL_DIR)
    path = TMP / "scale" / "sentiment.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"experts": {"sentiment": entry}}))
    return path


def stream_input() -> Path:
    """``STREAM_DOCS`` documents ``{"id", "text"}`` of VADER ground-truth sentences."""
    from bench.common import load_texts, write_jsonl

    return write_jsonl(load_texts(), STREAM_DOCS, TMP / "scale" / "stream.jsonl")


def stream_round(endpoint: str, jsonl: Path, connections: int, server_pids: list[int]) -> dict:
    """One ``expertd pipe sentiment --lines`` over ``jsonl``: documents/s, and CPU used."""
    out_path = TMP / "scale" / "stream.out.jsonl"
    server_before = sum(cpu_seconds(pid) for pid in server_pids)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with open(jsonl, "rb") as stdin, open(out_path, "wb") as stdout:
        done = subprocess.run([EXPERTD, "pipe", "sentiment", "--lines", "--endpoint", endpoint,
                               "--connections", str(connections)], stdin=stdin, stdout=stdout,
                              stderr=subprocess.PIPE, env=child_env(), timeout=300)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"expertd pipe failed (exit {done.returncode}): {done.stderr[-1500:]!r}")
    lines = out_path.read_bytes().splitlines()
    if len(lines) != STREAM_DOCS or "sentiment" not in json.loads(lines[-1]).get("opinions", {}):
        raise RuntimeError(f"expertd pipe wrote {len(lines)} of {STREAM_DOCS} lines")
    return {"docs_per_s": STREAM_DOCS / wall, "seconds": wall,
            "pipe_cpu_s": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime),
            "server_cores": (sum(cpu_seconds(pid) for pid in server_pids) - server_before) / wall}


def stream_section(rounds: int) -> dict:
    """The stream arms, interleaved over ``rounds``."""
    procs = Procs()
    try:
        config, jsonl = sentiment_config(), stream_input()
        servers = {}
        for workers in (1, 2):
            endpoint = serve(procs, f"stream-{workers}", config, "--workers", str(workers))
            servers[workers] = (endpoint, procs.procs[-1])
        pids = {workers: wait_workers(endpoint, proc, workers)
                for workers, (endpoint, proc) in servers.items()}
        for workers, (endpoint, _) in servers.items():  # untimed: warm every path once
            stream_round(endpoint, jsonl, 2, pids[workers])
        runs: dict[str, list[dict]] = {arm: [] for arm, _, _ in STREAM_ARMS}
        for r in range(rounds):
            for arm, workers, connections in STREAM_ARMS:
                result = stream_round(servers[workers][0], jsonl, connections, pids[workers])
                runs[arm].append(result)
                print(f"round {r + 1}/{rounds} stream, {arm}: {result['docs_per_s']:,.0f} "
                      f"documents/s", file=sys.stderr)
    finally:
        procs.stop_all()
    return {"runs": runs, "documents": STREAM_DOCS}


# -- the run ------------------------------------------------------------------------------


SECTIONS = ("calls", "stream", "memory")


def run(rounds: int, duration: float, warmup: float, with_tf: bool,
        sections: tuple[str, ...] = SECTIONS) -> dict:
    """Measure each section asked for; the raw results."""
    load_before = os.getloadavg()
    results: dict = {"rounds": rounds, "duration": duration, "warmup": warmup,
                     "cpus": os.cpu_count(),
                     "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "calls" in sections:
        results["runs"] = calls_section(rounds, duration, warmup)
        results["vader_predict_us"] = vader_predict_us()
    if "stream" in sections:
        results["stream"] = stream_section(rounds)
    load_after = os.getloadavg()
    results["loadavg"] = [round(load_before[0], 2), round(load_after[0], 2)]
    if "memory" in sections:
        procs = Procs()
        try:
            results["memory"] = {"vader": memory_section(procs, "mem-vader", VADER_CONFIG)}
            if with_tf:
                results["memory"]["default"] = memory_section(procs, "mem-default",
                                                              ROOT / "config" / "experts.yaml")
        finally:
            procs.stop_all()
    return results


def vader_predict_us(rounds: int = 5, docs: int = 400) -> float:
    """Median CPU µs per document of ``vader``'s own ``predict`` in this process (no RPC).

    CPU time, like the workers' CPU per call it is set beside (wall time on a
    shared machine would count other processes' turns).
    """
    from expertd.experts.vader import VaderExpert

    expert = VaderExpert()
    texts = [TEXTS[i % len(TEXTS)] for i in range(docs)]
    expert.predict(texts[:4])
    times = []
    for _ in range(rounds):
        began = time.process_time()
        expert.predict(texts)
        times.append((time.process_time() - began) / docs * 1e6)
    return median(times)


def calls_section(rounds: int, duration: float, warmup: float) -> dict:
    """Start the three arms, measure interleaved rounds of calls; the runs per arm."""
    procs = Procs()
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
    finally:
        procs.stop_all()
    return runs


def render(r: dict) -> str:
    """The results as Markdown."""
    lines = [
        "# Scale-out benchmark (`python -m bench.scale`)", "",
        f"Run {r['when']} on {r['cpus']} cores (shared with other work: orders of magnitude, "
        f"compare only within this run). {r['rounds']} interleaved rounds per arm; medians. "
        f"1-minute load average of the machine: {r['loadavg'][0]} before the rounds, "
        f"{r['loadavg'][1]} after them.", ""]
    line = headline(r)
    if line:
        lines += [line, ""]
    if "runs" in r:
        lines += render_calls(r)
    if "stream" in r:
        lines += render_stream(r["stream"])
    if "memory" in r:
        lines += render_memory(r["memory"])
    return "\n".join(lines)


def headline(r: dict) -> str:
    """The issue's two goals in one line (RESULTS.md copies it), from what this run measured."""
    parts = []
    if "runs" in r:
        med = {arm: median(x["calls_per_s"] for x in runs) for arm, runs in r["runs"].items()}
        two = ratio(med["2 workers"], med["1 worker"])
        parts.append(f"2 workers give **{two:.2f}x** the calls/s of 1 on `vader` at concurrency 64 "
                     f"(goal >= {CALLS_GOAL:g}x: {'met' if two >= CALLS_GOAL else '**missed**'})")
    if "stream" in r:
        best = max(median(x["docs_per_s"] for x in runs) for runs in r["stream"]["runs"].values())
        parts.append(f"one `expertd pipe sentiment --lines` stage streams **{best:,.0f} "
                     f"documents/s** (goal >= {STREAM_GOAL:,}: "
                     f"{'met' if best >= STREAM_GOAL else '**missed**'})")
    return f"Headline: {'; '.join(parts)}." if parts else ""


def render_calls(r: dict) -> list[str]:
    """The calls-per-second section."""
    med = {arm: median(x["calls_per_s"] for x in runs) for arm, runs in r["runs"].items()}
    one, two, proxy = med["1 worker"], med["2 workers"], med["HAProxy, 2 servers x 1"]
    lines = [
        "## Calls per second, concurrency 64, `vader`", "",
        f"Load: concurrency 64 = {CLIENTS} client processes x {CONNECTIONS} connections x "
        f"{WINDOW} calls in flight, one `vader` document per call (CPU-bound, no TensorFlow); "
        f"rounds of {r['duration']:g} s after {r['warmup']:g} s of warm-up. Each connection is "
        "its own closed loop, as independent callers are (until 2026-12-02 a client waited on "
        "its connections in turn, so each went at the pace of the slowest, and a worker the "
        "kernel gave fewer connections idled: 1.37x to 1.52x). "
        "The clients run on the same cores as the servers.", "",
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
    per_core = median(x["calls_per_s"] / x["server_cores"] for x in r["runs"]["2 workers"])
    clients = median(x["client_cores"] for x in r["runs"]["2 workers"])
    lines += ["", f"Two workers can use two cores only when the machine has them to give: here "
              f"the 2 workers together got {busy['2 workers']:.2f} cores "
              f"(1 worker: {busy['1 worker']:.2f}), and the load generator "
              f"{clients:.2f}. At this run's {per_core:,.0f} calls per server core-second, "
              f"2 workers would reach 1.6x of 1 worker with "
              f"{1.6 * one / per_core:.2f} cores of the 2 (the rest being the generator's "
              f"and the machine's other work)."]
    if "vader_predict_us" in r:
        server_us = 1e6 / per_core
        lines += ["", f"Where a call's server CPU goes: `vader`'s own `predict` takes "
                  f"{r['vader_predict_us']:.0f} µs of CPU per document in-process (measured after the "
                  f"rounds), of the {server_us:.0f} µs of worker CPU per call with 2 workers "
                  f"({r['vader_predict_us'] / server_us:.0%}); the rest is RPC (zerorpc, "
                  f"msgpack, validation). The generator costs about "
                  f"{1e6 * clients / median(x['calls_per_s'] for x in r['runs']['2 workers']):.0f}"
                  f" µs of CPU per call, start-up included."]
    lines += ["", "How the 16 connections landed (connections per worker or server, per round):", ""]
    for arm, runs in r["runs"].items():
        lines.append(f"- {arm}: {'; '.join('/'.join(map(str, x['split'])) for x in runs)}")
    lines += ["", f"**2 workers / 1 worker = {ratio(two, one):.2f}x** (the issue's goal: "
              f">= {CALLS_GOAL:g}x). HAProxy with two single-process servers / 1 worker = "
              f"{ratio(proxy, one):.2f}x.",
              ""]
    return lines


def render_stream(stream: dict) -> list[str]:
    """The stream section."""
    runs = stream["runs"]
    med = {arm: median(x["docs_per_s"] for x in rs) for arm, rs in runs.items()}
    base = med[STREAM_ARMS[0][0]]
    lines = ["## Stream: one `expertd pipe sentiment --lines`", "",
             f"{stream['documents']:,} documents (VADER ground-truth sentences, cycled) per run, from "
             "spawn to exit (start-up included), output to a file; the stage's CPU "
             "(user + system) and the cores its server's workers kept busy.", "",
             "| arm | documents/s (median) | vs first row | runs | stage CPU s | server cores |",
             "|---|---:|---:|---|---:|---:|"]
    for arm, rs in runs.items():
        each = ", ".join(f"{x['docs_per_s']:,.0f}" for x in rs)
        lines.append(f"| {arm} | {med[arm]:,.0f} | {ratio(med[arm], base):.2f}x | {each} | "
                     f"{median(x['pipe_cpu_s'] for x in rs):.2f} | "
                     f"{median(x['server_cores'] for x in rs):.2f} |")
    best = max(med, key=med.get)
    per_doc = {arm: 1e6 * median((x["pipe_cpu_s"] + x["server_cores"] * x["seconds"])
                                 / stream["documents"] for x in rs) for arm, rs in runs.items()}
    lines += ["", f"Best: **{med[best]:,.0f} documents/s** ({best}; the issue's goal: >= {STREAM_GOAL:,}). "
              "CPU per document, stage and workers together (µs): "
              + ", ".join(f"{arm}: {v:.0f}" for arm, v in per_doc.items())
              + f". On 2 cores, {STREAM_GOAL:,} documents/s needs at most "
              f"{2e6 / STREAM_GOAL:.0f} µs per document in all.", ""]
    return lines


def render_memory(memory: dict) -> list[str]:
    """The memory section."""
    lines = ["## Memory per worker", "",
             "RSS counts pages shared with other processes (libraries, copy-on-write); "
             "PSS splits shared pages between the processes that share them.", "",
             "| experts file | process | RSS MiB | PSS MiB |", "|---|---|---:|---:|"]
    for name, m in memory.items():
        rows = [("single-process server", m["single"]), ("supervisor (of 2)", m["supervisor"])]
        rows += [(f"worker {i}", w) for i, w in enumerate(m["workers"])]
        for label, mem in rows:
            lines.append(f"| {name} | {label} | {mib(mem['rss_kib'])} | {mib(mem['pss_kib'])} |")
    lines += ["", "Memory per extra worker is about one worker's RSS (each worker loads its own "
              "experts; nothing but the interpreter's read-only pages is shared).", ""]
    return lines


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
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="Measure only this section (repeatable); default: all.")
    parser.add_argument("--render", action="store_true",
                        help="Measure nothing: write the report again from the last run's raw "
                             "results (bench/tmp/scale/results.json).")
    args = parser.parse_args(argv)
    if args.render:
        RESULTS.write_text(render(json.loads((TMP / "scale" / "results.json").read_text())))
        print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
        return
    if args.client:
        result = client_main(args.client, CONNECTIONS, WINDOW, args.duration, args.warmup)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    results = run(args.rounds, args.duration, args.warmup, not args.no_tensorflow,
                  tuple(args.only or SECTIONS))
    (TMP / "scale").mkdir(parents=True, exist_ok=True)
    (TMP / "scale" / "results.json").write_text(json.dumps(results, indent=1))
    RESULTS.write_text(render(results))
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
