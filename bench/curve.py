"""What CurveZMQ costs: the same calls with CURVE off and on, side by side.

Two ``expertd serve`` processes with the same cheap experts (no TensorFlow, so
the transport is what is measured: the worst case for CURVE's relative cost):
``off`` (plain, loopback) and ``on`` (``--curve-secret-key`` and
``--authorized-keys``, keys made by ``expertd keygen``). Rounds interleave
off, on, off, on, ... and the tables give medians over the rounds.

1. The stock ``zerorpc.Client`` (what ``ExpertsClient`` and the README recipe
   use), gevent callers: calls/s, p50 and p99 at concurrency 1 and 16.
2. The pipe stage's connection, one caller in sequence: ``clients.wire.Connection``
   (off) vs ``clients.curve.CurveConnection`` (on).
3. Raw pyzmq round trips, CURVE off vs on, in one process: the encryption alone.
4. A whole one-document ``expertd pipe`` stage, a fresh process each time (with
   keys the stage imports pyzmq and does the CURVE handshake).

    .venv/bin/python -m bench.curve            # writes bench/RESULTS-curve.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (BENCH, EXPERTD, PYTHON, ROOT, TMP, child_env, free_port, interleaved,
                          load_texts, median, percentile, ratio)

RESULTS = BENCH / "RESULTS-curve.md"
CONFIG_TEXT = """# bench/curve.py: cheap experts, so the transport dominates.
experts:
  shouting: expertd.experts.examples:shouting
"""


# -- load generators (run as subprocesses: python -m bench.curve load ...) -------------

def load_zerorpc(endpoint: str, concurrency: int, duration: float, warmup: float,
                 texts: list[str]) -> dict:
    """Stock zerorpc client (keys from the environment, if any), gevent callers (bench.load)."""
    import zerorpc

    from bench.load import drive
    from expertd.clients.curve import secure_zerorpc

    client = zerorpc.Client(timeout=30, heartbeat=5)
    secure_zerorpc(client)
    client.connect(endpoint)
    try:
        return drive(client, "shouting", concurrency, duration, warmup, texts)
    finally:
        client.close()


def load_wire(endpoint: str, duration: float, warmup: float, texts: list[str]) -> dict:
    """The pipe's connection (``clients.wire.connect``: CURVE when keys are set), one caller."""
    from bench.load import summary
    from expertd.clients.wire import connect

    docs = [{"text": t} for t in texts]
    latencies: list[float] = []
    with connect(endpoint, timeout=30) as connection:
        connection.call("health")
        window_start = time.perf_counter() + warmup
        window_end = window_start + duration
        k = 0
        while True:
            start = time.perf_counter()
            if start >= window_end:
                break
            connection.call("shouting", docs[k % len(docs)])
            end = time.perf_counter()
            if window_start <= end <= window_end:
                latencies.append(end - start)
            k += 1
    return summary(latencies, duration, [])


def zmq_round_trips(curve: bool, count: int, size: int) -> float:
    """Microseconds per DEALER->ROUTER->DEALER round trip of ``size`` bytes (pyzmq, one process).

    No zerorpc, no server: what the encryption itself adds to a message.
    """
    import threading

    import zmq

    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    if curve:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        router.curve_server, router.curve_secretkey = True, server_secret
        dealer.curve_serverkey, dealer.curve_publickey = server_public, client_public
        dealer.curve_secretkey = client_secret
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        for _ in range(count + 1):
            router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=echo)
    thread.start()
    payload = b"x" * size
    dealer.send(payload)
    dealer.recv()  # connected and handshaken before the clock starts
    began = time.perf_counter()
    for _ in range(count):
        dealer.send(payload)
        dealer.recv()
    elapsed = time.perf_counter() - began
    thread.join()
    router.close(0)
    dealer.close(0)
    context.term()
    return elapsed / count * 1e6


# -- the driver ---------------------------------------------------------------------------

class Arms:
    """The two servers and the environment a client of each runs with."""

    def __init__(self, work: Path) -> None:
        """Make keys, write the experts file, start both servers and wait for them."""
        self.work = work
        keys = work / "keys"
        subprocess.run([EXPERTD, "keygen", "--dir", str(keys), "--client", "bench"],
                       check=True, capture_output=True, cwd=ROOT)
        config = work / "experts.yaml"
        config.write_text(CONFIG_TEXT)
        self.env = {"off": child_env(),
                    "on": child_env(EXPERTD_SERVER_KEY=str(keys / "server.key"),
                                    EXPERTD_CLIENT_KEY=str(keys / "clients" / "bench.key_secret"))}
        for env in self.env.values():
            env["PYTHONPATH"] = str(ROOT)
        self.endpoint = {arm: f"tcp://127.0.0.1:{free_port()}" for arm in self.env}
        curve = ["--curve-secret-key", str(keys / "server.key_secret"),
                 "--authorized-keys", str(keys / "authorized")]
        self.servers = {}
        for arm, extra in (("off", []), ("on", curve)):
            log = open(work / f"server-{arm}.log", "wb")
            self.servers[arm] = subprocess.Popen(
                [EXPERTD, "serve", "--config", str(config), "--bind", self.endpoint[arm],
                 "--log-level", "warning", *extra],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env())
        for arm in self.env:
            self._wait(arm)

    def _wait(self, arm: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = subprocess.run(
                [EXPERTD, "call", "--endpoint", self.endpoint[arm], "--timeout", "2", "health"],
                capture_output=True, env=self.env[arm], cwd=ROOT)
            if done.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"server {arm} not ready: {(self.work / f'server-{arm}.log').read_text()}")

    def close(self) -> None:
        """Stop both servers."""
        for process in self.servers.values():
            process.terminate()
        for process in self.servers.values():
            process.wait(30)

    def load(self, arm: str, client: str, concurrency: int, duration: float,
             warmup: float, texts_path: Path) -> dict:
        """One load-generator process against ``arm``."""
        command = [PYTHON, "-m", "bench.curve", "load", "--client", client, "--endpoint",
                   self.endpoint[arm], "--concurrency", str(concurrency), "--duration",
                   str(duration), "--warmup", str(warmup), "--texts", str(texts_path)]
        done = subprocess.run(command, cwd=ROOT, env=self.env[arm], capture_output=True,
                              text=True, timeout=duration + warmup + 90)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stage(self, arm: str, line: bytes) -> float:
        """Wall seconds of one ``expertd pipe shouting`` process on one document."""
        env = dict(self.env[arm], EXPERTD_ENDPOINT=self.endpoint[arm])
        began = time.perf_counter()
        done = subprocess.run([EXPERTD, "pipe", "shouting"], input=line, capture_output=True,
                              env=env, cwd=ROOT, timeout=60)
        elapsed = time.perf_counter() - began
        if done.returncode != 0 or b'"shouting"' not in done.stdout:
            raise RuntimeError(f"stage failed: {done.stderr.decode(errors='replace')}")
        return elapsed


def run(rounds: int, duration: float, warmup: float, stage_runs: int) -> dict:
    """Every section, interleaved; returns the results."""
    work = TMP / "curve"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    texts = load_texts()[:2000]
    texts_path = work / "texts.json"
    texts_path.write_text(json.dumps(texts, ensure_ascii=False))
    arms = Arms(work)
    try:
        results = {"zerorpc": interleaved(
            {"off": "off", "on": "on"}, [1, 16], rounds,
            lambda arm, c: arms.load(arm, "zerorpc", c, duration, warmup, texts_path),
            label="curve", rate="calls_per_s")}
        results["wire"] = interleaved(
            {"off": "off", "on": "on"}, [1], rounds,
            lambda arm, c: arms.load(arm, "wire", c, duration, warmup, texts_path),
            label="curve", rate="calls_per_s")
        trips: dict[str, list[float]] = {}
        for _ in range(rounds):
            for size in (100, 10_000):
                for arm in ("off", "on"):
                    trips.setdefault(f"{arm}@{size}", []).append(
                        zmq_round_trips(arm == "on", 3000, size))
        results["zmq"] = {key: {"median_us": median(v), "runs": [round(x, 1) for x in v]}
                          for key, v in trips.items()}
        line = (json.dumps({"text": texts[0]}) + "\n").encode()
        walls: dict[str, list[float]] = {"off": [], "on": []}
        for arm in walls:  # one unmeasured run each: bytecode caches, page cache
            arms.stage(arm, line)
        for _ in range(stage_runs):
            for arm in walls:
                walls[arm].append(arms.stage(arm, line))
        results["stage"] = {arm: {"median_ms": median(v) * 1000, "p90_ms":
                                  percentile(sorted(v), 90) * 1000, "runs": len(v)}
                            for arm, v in walls.items()}
    finally:
        arms.close()
    results["settings"] = {"rounds": rounds, "duration_s": duration, "warmup_s": warmup,
                           "stage_runs": stage_runs, "cpus": os.cpu_count(),
                           "python": platform.python_version()}
    return results


def report(results: dict) -> str:
    """RESULTS-curve.md."""
    s = results["settings"]
    out = ["# CurveZMQ on vs off (bench/curve.py)", "",
           f"Made by `.venv/bin/python -m bench.curve` on {s['cpus']} CPUs, Python "
           f"{s['python']}. Two `expertd serve` processes with one cheap expert (`shouting`, "
           f"no TensorFlow: the transport dominates, the worst case for CURVE's relative "
           f"cost); `on` has `--curve-secret-key` and `--authorized-keys`. {s['rounds']} "
           f"interleaved rounds (off, on, off, on, ...) of {s['duration_s']:g} s after "
           f"{s['warmup_s']:g} s warm-up, each a fresh client process; medians over rounds. "
           f"\"Paired\" is the median of each round's on/off ratio (the two runs of a round "
           f"are back to back, so they share the machine's load of the moment).", ""]
    for key, title in (("zerorpc", "Stock `zerorpc.Client` (gevent callers; also `ExpertsClient`)"),
                       ("wire", "The pipe stage's connection, one caller in sequence "
                                "(`wire.Connection` off, `curve.CurveConnection` on)")):
        table = results[key]
        out += [f"## {title}", "",
                "| concurrency | CURVE | calls/s | p50 ms | p99 ms | on/off calls/s | "
                "on/off calls/s, paired | on/off p99 | errors |",
                "|---|---|---|---|---|---|---|---|---|"]
        for concurrency in sorted({row["concurrency"] for row in table.values()}):
            off, on = table[f"off@{concurrency}"], table[f"on@{concurrency}"]
            for arm, row in (("off", off), ("on", on)):
                paired = median(ratio(a, b) for a, b in zip(on["calls_per_s_runs"],
                                                            off["calls_per_s_runs"]))
                extra = ("", "", "") if arm == "off" else (
                    f"{ratio(on['calls_per_s'], off['calls_per_s']):.2f}", f"{paired:.2f}",
                    f"{ratio(on['p99_ms'], off['p99_ms']):.2f}")
                out.append(f"| {concurrency} | {arm} | {row['calls_per_s']:,.0f} | "
                           f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {extra[0]} | "
                           f"{extra[1]} | {extra[2]} | {row['errors']} |")
        out.append("")
    trips = results["zmq"]
    out += ["## Raw ZeroMQ round trips (pyzmq DEALER/ROUTER echo in one process, no zerorpc)",
            "", "What the encryption itself adds to one message each way (3,000 round trips "
            "a run, interleaved rounds).", "",
            "| message bytes | CURVE off µs | CURVE on µs | on - off µs | on/off |",
            "|---|---|---|---|---|"]
    for size in (100, 10_000):
        off, on = trips[f"off@{size}"]["median_us"], trips[f"on@{size}"]["median_us"]
        out.append(f"| {size:,} | {off:.1f} | {on:.1f} | {on - off:+.1f} | "
                   f"{ratio(on, off):.2f} |")
    out.append("")
    stage = results["stage"]
    out += ["## One-document `expertd pipe` stage (a fresh process each run)", "",
            "| CURVE | median wall ms | p90 ms | runs |", "|---|---|---|---|"]
    for arm in ("off", "on"):
        row = stage[arm]
        out.append(f"| {arm} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['runs']} |")
    out += ["", f"With keys a stage imports pyzmq and does the CURVE handshake: "
            f"{stage['on']['median_ms'] - stage['off']['median_ms']:+.1f} ms a stage "
            f"({ratio(stage['on']['median_ms'], stage['off']['median_ms']):.2f}x). "
            f"Without keys the stage never imports pyzmq.", "",
            "Raw numbers: `bench/tmp/curve/results.json`.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.curve [--rounds N ...]`` or ``python -m bench.curve load ...``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        parser = argparse.ArgumentParser(prog="bench.curve load")
        parser.add_argument("--client", choices=["zerorpc", "wire"], required=True)
        parser.add_argument("--endpoint", required=True)
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--duration", type=float, default=3.0)
        parser.add_argument("--warmup", type=float, default=0.5)
        parser.add_argument("--texts", required=True)
        args = parser.parse_args(argv[1:])
        texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
        if args.client == "zerorpc":
            result = load_zerorpc(args.endpoint, args.concurrency, args.duration, args.warmup,
                                  texts)
        else:
            result = load_wire(args.endpoint, args.duration, args.warmup, texts)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    parser = argparse.ArgumentParser(prog="bench.curve", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--stage-runs", type=int, default=20)
    args = parser.parse_args(argv)
    results = run(args.rounds, args.duration, args.warmup, args.stage_runs)
    (TMP / "curve" / "results.json").write_text(json.dumps(results, indent=2))
    RESULTS.write_text(report(results))
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
