"""Where a 1,000-document ``batch("sentiment", ...)`` spends the server's time: py-spy.

``python -m bench.profile_batch [--seconds S] [--docs 1000]`` starts one
``expertd serve`` holding the sentiment model, calls ``batch("sentiment", docs)``
in a loop from this process (the lean ``clients.wire`` client), and samples the
server with py-spy (``bench/requirements-profile.txt``, in its own venv
``.venv-profile``; it attaches to the pid, so it needs ptrace rights): once as
a flame graph (bench/profile-batch.svg), once as collapsed stacks, which are
summed into the breakdown of bench/RESULTS-profile.md (each sample to the
first category its stack matches, model first). Idle threads are not sampled.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.common import BENCH, ROOT, TMP, child_env, cpu_seconds, load_texts, median
from bench.report import table
from bench.servers import Fleet
from bench.startup import extract_revision, sentiment_config

PY_SPY = ROOT / ".venv-profile" / "bin" / "py-spy"

#: (category, substrings of a frame that put a sample in it), checked in order per sample.
CATEGORIES = [
    # "keras/" (the package), not "keras": experts/keras_text.py is the expert's own Python
    ("model: TensorFlow call (tf.function)", ("tensorflow/", "keras/")),
    ("expert: opinions from the model's arrays (keras_text.predict)", ("keras_text.py",)),
    ("output checks (rpc_server/outputs.py, jsonschema-rs)", ("outputs.py", "jsonschema")),
    ("msgpack (Python frames only; C calls count where they are made)", ("msgpack",)),
    ("batcher (rpc_server/batching.py)", ("batching.py",)),
    ("input checks (rpc_server/validation.py)", ("validation.py",)),
    ("service: chains, merge, answers (service.py, chain_runner.py)",
     ("service.py", "chain_runner.py", "incremental.py")),
    ("transport: zerorpc events (their msgpack calls included), ZeroMQ, gevent",
     ("zerorpc", "zmq", "transport", "gevent")),
]


#: Leaf frames of threads that wait (py-spy cannot tell these waits from work): the gevent
#: hub's loop polling for events, pool threads waiting for a task.
WAITING = ("Hub.run (gevent/hub.py", "acquire_with_timeout (gevent/_threading.py")


def category(stack: str) -> str:
    """The category of one collapsed stack (``frame;frame;...``)."""
    if stack.rsplit(";", 1)[-1].startswith(WAITING):
        return "waiting: gevent hub polling, idle pool threads (not work)"
    for name, needles in CATEGORIES:
        if any(needle in stack for needle in needles):
            return name
    return "other"


def record(pid: int, seconds: float, fmt: str, out: Path, rate: int) -> subprocess.Popen:
    """Start py-spy on ``pid`` for ``seconds``, writing ``out`` in format ``fmt``."""
    return subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--duration", str(round(seconds)),
                             "--rate", str(rate), "--format", fmt, "--output", str(out),
                             "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def load_while(spy: subprocess.Popen, endpoint: str, docs: list[dict]) -> tuple[int, float]:
    """Call ``batch`` in a loop until ``spy`` exits; the number of calls and their seconds."""
    from expertd.clients.wire import connect

    calls, spent = 0, 0.0
    with connect(endpoint, timeout=60) as connection:
        while spy.poll() is None:
            began = time.perf_counter()
            answers = connection.call("batch", "sentiment", docs)
            spent += time.perf_counter() - began
            assert len(answers) == len(docs)
            calls += 1
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed: {spy.stderr.read().decode(errors='replace')[-800:]}")
    return calls, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--label", default="", help="what the run profiles, for the report")
    parser.add_argument("--baseline", help="git revision whose server is timed beside this one's")
    parser.add_argument("--rounds", type=int, default=20,
                        help="side by side: rounds of --calls calls to each server")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--svg", type=Path, default=BENCH / "profile-batch.svg")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS-profile.md")
    args = parser.parse_args()
    if not PY_SPY.exists():
        raise SystemExit(f"no {PY_SPY}: python3 -m venv .venv-profile && "
                         ".venv-profile/bin/pip install -r bench/requirements-profile.txt")
    texts = load_texts()
    docs = [{"text": texts[i % len(texts)]} for i in range(args.docs)]
    raw = TMP / "profile-batch.txt"
    with Fleet() as fleet:
        server = fleet.expertd("profile", sentiment_config())
        side_by_side = None
        if args.baseline:
            # Four servers started in the order this, baseline, baseline, this (ABBA): where a
            # server sits in the start order moved a call's time by ~10% in trials here.
            env = child_env(PYTHONPATH=str(extract_revision(args.baseline)))
            base1 = fleet.expertd("profile-baseline-1", sentiment_config(), env=env)
            base2 = fleet.expertd("profile-baseline-2", sentiment_config(), env=env)
            this2 = fleet.expertd("profile-2", sentiment_config())
            fleet.wait_ready([server, base1, base2, this2])
            timed, cpu = time_side_by_side({"this code #1": server, f"{args.baseline} #1": base1,
                                            f"{args.baseline} #2": base2, "this code #2": this2},
                                           docs, args)
            side_by_side = {name: (timed[f"{name} #1"] + timed[f"{name} #2"],
                                   cpu[f"{name} #1"] + cpu[f"{name} #2"])
                            for name in ("this code", args.baseline)}
            for extra in (base1, base2, this2):
                fleet.stop(extra)
        else:
            fleet.wait_ready([server])
        from expertd.clients.wire import connect

        with connect(server.url, timeout=60) as connection:  # warm: the graph is traced once
            for _ in range(3):
                connection.call("batch", "sentiment", docs)
        calls_svg, _ = load_while(record(server.pid, args.seconds, "flamegraph", args.svg,
                                         args.rate), server.url, docs)
        calls, spent = load_while(record(server.pid, args.seconds, "raw", raw, args.rate),
                                  server.url, docs)
    samples: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            samples[category(stack)] += int(count)
    write_report(args, samples, calls, spent, side_by_side, os.getloadavg())
    print(args.out.read_text())


def time_side_by_side(servers: dict, docs: list[dict], args) -> tuple[dict, dict]:
    """Milliseconds per ``batch`` call of each server, in alternating rounds of ``args.calls``:
    wall time as this client saw it, and the server's CPU time (``/proc/PID/stat``)."""
    from expertd.clients.wire import connect

    connections = {name: connect(server.url, timeout=60) for name, server in servers.items()}
    times: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for connection in connections.values():  # warm: the graph is traced once per server
            for _ in range(3):
                connection.call("batch", "sentiment", docs)
        names = list(servers)
        for round_no in range(args.rounds):
            for name in names if round_no % 2 == 0 else names[::-1]:
                began, used = time.perf_counter(), cpu_seconds(servers[name].pid)
                for _ in range(args.calls):
                    connections[name].call("batch", "sentiment", docs)
                times[name].append((time.perf_counter() - began) / args.calls * 1000)
                cpu[name].append((cpu_seconds(servers[name].pid) - used) / args.calls * 1000)
    finally:
        for connection in connections.values():
            connection.close()
    return times, cpu


def write_report(args, samples: Counter, calls: int, spent: float, side_by_side: dict | None,
                 load: tuple) -> None:
    """bench/RESULTS-profile.md: the breakdown of the samples."""
    total = sum(samples.values()) or 1
    rows = [[name, f"{count:,}", f"{count / total:.1%}"] for name, count in samples.most_common()]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ms = spent / calls * 1000 if calls else float("nan")
    lines = [
        "# Where a 1,000-document batch goes in the server",
        "",
        f"`python -m bench.profile_batch --seconds {args.seconds:g} --docs {args.docs}` "
        f"{args.label}on {os.uname().nodename} ({os.cpu_count()} cores), {when}; load average "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (shared: other work ran). One server "
        f"holding the sentiment model; `batch(\"sentiment\", {args.docs} docs)` in a loop "
        f"from one client ({calls} calls in the sampled window, {ms:.1f} ms a call as the "
        f"client saw it), the server sampled by py-spy at {args.rate} Hz (busy threads only). "
        f"Flame graph: `{args.svg.name}`. Each sample goes to the first category of the "
        "table (in its order in bench/profile_batch.py) that a frame of its stack matches.",
        "",
        *table(["where", "samples", "share"], rows),
        "",
    ]
    if side_by_side:
        lines += [
            f"## Side by side with {args.baseline}",
            "",
            f"Four servers holding the sentiment model, two of this code and two of "
            f"{args.baseline}'s (`git archive`, first on `PYTHONPATH`), started together in "
            f"the order this, {args.baseline}, {args.baseline}, this; {args.rounds} rounds of "
            f"{args.calls} `batch(\"sentiment\", {args.docs} docs)` calls to each, the order "
            "alternating by round, one client; each code's rounds pooled. Server CPU: utime + "
            "stime of the server process (all its threads, the model's included) over a round, "
            "per call (10 ms clock ticks: a median of rounds moves in steps of 10/calls ms).",
            "",
            *table(["server", "server CPU ms a call (median of rounds)", "ms a call (median of rounds)",
                    "fastest round", "docs/s"],
                   [[name, f"{median(cpu):.2f}", f"{median(ms):.2f}", f"{min(ms):.2f}",
                     f"{args.docs / median(ms) * 1000:,.0f}"]
                    for name, (ms, cpu) in side_by_side.items()]),
            "",
        ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
