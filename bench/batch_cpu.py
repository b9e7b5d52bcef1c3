"""CPU per ``batch("sentiment", 1,000 docs)`` call, this code side by side with a baseline.

``python -m bench.batch_cpu --baseline REV [--rounds 12] [--calls 5] [--docs 1000]``
starts four servers holding the sentiment model, two of this checkout and two
of ``REV`` (``git archive``, first on ``PYTHONPATH``), in the order this, REV,
REV, this, and the in-process model (``bench.inprocess``). In each round
(order alternating) every server gets ``--calls`` calls from this one client,
then the in-process model runs ``--calls`` passes over the same texts. Per
call it records the server's CPU (utime + stime from ``/proc/PID/stat``, all
threads), this client's CPU and the wall time. On a shared machine the CPU
times move far less than the wall times, so they are what a change is judged
by. Prints a Markdown table; ``--append FILE`` adds it, as a section, to a report.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.common import PYTHON, TMP, child_env, cpu_seconds, load_texts, median, write_texts
from bench.report import table
from bench.servers import Fleet
from bench.startup import extract_revision, sentiment_config


def main() -> None:
    """Start the servers and the in-process model, time interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--no-inprocess", action="store_true")
    parser.add_argument("--method", choices=("batch", "opinions_batch"), default="batch",
                        help="batch(sentiment, docs), or opinions_batch(docs, [sentiment], "
                             "{only_opinions: true}) as a pipe stage asks")
    parser.add_argument("--append", type=Path, help="a Markdown report to add the table to")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the baseline's servers only "
                             "(e.g. --baseline HEAD --baseline-env PYTHONMALLOC=pymalloc)")
    args = parser.parse_args()
    from bench.batch import _read_line
    from expertd.clients.wire import connect

    corpus = load_texts()
    texts = [corpus[i % len(corpus)] for i in range(args.docs)]
    docs = [{"text": t} for t in texts]
    call = (("batch", "sentiment", docs) if args.method == "batch" else
            ("opinions_batch", docs, ["sentiment"], {"only_opinions": True}))
    env = child_env(PYTHONPATH=str(extract_revision(args.baseline)),
                    **dict(item.split("=", 1) for item in args.baseline_env))
    with Fleet() as fleet:
        servers = {"this #1": fleet.expertd("cpu-this-1", sentiment_config()),
                   "base #1": fleet.expertd("cpu-base-1", sentiment_config(), env=env),
                   "base #2": fleet.expertd("cpu-base-2", sentiment_config(), env=env),
                   "this #2": fleet.expertd("cpu-this-2", sentiment_config())}
        worker = None
        if not args.no_inprocess:
            path = write_texts(texts, TMP / "batch-cpu-texts.json")
            worker = fleet.worker("cpu-inprocess", [PYTHON, "-m", "bench.inprocess", "--texts",
                                                    str(path), "--count", str(args.docs)])
        fleet.wait_ready(list(servers.values()))
        if worker is not None:
            _read_line(worker, 240.0)
        connections = {name: connect(s.url, timeout=120) for name, s in servers.items()}
        cpu = {name: [] for name in servers}
        client = {name: [] for name in servers}
        wall = {name: [] for name in servers}
        graph: list[float] = []
        try:
            for connection in connections.values():
                for _ in range(3):
                    connection.call(*call)
            names = list(servers)
            for round_no in range(args.rounds):
                for name in names if round_no % 2 == 0 else names[::-1]:
                    pid = servers[name].pid
                    before, c0, w0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
                    for _ in range(args.calls):
                        answers = connections[name].call(*call)
                    w1, c1, after = time.perf_counter(), time.process_time(), cpu_seconds(pid)
                    assert len(answers) == len(docs)
                    cpu[name].append((after - before) / args.calls * 1000)
                    client[name].append((c1 - c0) / args.calls * 1000)
                    wall[name].append((w1 - w0) / args.calls * 1000)
                if worker is not None:
                    worker.process.stdin.write(json.dumps({"reps": args.calls}) + "\n")
                    worker.process.stdin.flush()
                    graph += _read_line(worker, 120.0)["graph_s"]
        finally:
            for connection in connections.values():
                connection.close()
    model_ms = median(graph) * 1000 if graph else None
    rows = []
    for code in ("this", "base"):
        keys = [f"{code} #1", f"{code} #2"]
        pooled = {what: [v for k in keys for v in series[k]]
                  for what, series in (("cpu", cpu), ("client", client), ("wall", wall))}
        ms = median(pooled["wall"])
        label = code if code == "this" else " ".join([args.baseline, *args.baseline_env])
        rows.append([label, f"{median(pooled['cpu']):.2f}",
                     f"{median(pooled['client']):.2f}", f"{ms:.2f}", f"{min(pooled['wall']):.2f}",
                     f"{model_ms / ms:.0%}" if model_ms else "-"])
    load, when = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"## Server CPU and the in-process model, side by side with {args.baseline}", "",
             f"`python -m bench.batch_cpu --baseline {args.baseline} --rounds {args.rounds} "
             f"--calls {args.calls} --docs {args.docs} --method {args.method}`, {when}, "
             f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}. Four servers (this, "
             f"{args.baseline}, {args.baseline}, this) and the model alone in a process of its own "
             "(`bench.inprocess`: the same `tf.function` on the same texts"
             + (f", {model_ms:.2f} ms a pass" if model_ms else "") + "); in each round, "
             f"{args.calls} calls to each server (order alternating) then {args.calls} in-process "
             "passes. Server CPU: utime + stime of the server (all threads, the model's "
             "included; 10 ms clock ticks), client CPU: this one client's (encoding the "
             "documents, decoding the answers). Medians of rounds, each code's two servers pooled.",
             "", *table(["code", "server CPU ms/call", "client CPU ms/call", "ms a call (median)",
                         "fastest round", "vs in-process (docs/s)"], rows), ""]
    print("\n".join(lines))
    if args.append:
        with args.append.open("a") as report:
            report.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
