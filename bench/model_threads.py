"""TensorFlow's thread pools in one server process: its default against expertd's choice.

``python -m bench.model_threads [--rounds 10] [--docs 20000] [--calls 10]`` starts
four sentiment-only servers, together (two an arm, in the order A, B, B, A), that
differ only in their TensorFlow pool
sizes:

* ``expertd``: as ``expertd serve`` sizes them (``model_threads_env``: the cores
  minus one for the ops, leaving the serving loop a core);
* ``TensorFlow default``: ``TF_NUM_INTRAOP_THREADS=0`` and
  ``TF_NUM_INTEROP_THREADS=0`` (TensorFlow picks, as it would with neither set;
  set, so that expertd leaves them alone).

Each round, in an order that alternates by round: a stream of ``--docs`` JSON Lines
documents through ``expertd pipe sentiment --lines`` to each server (docs/s,
and the server's CPU per document from /proc), then ``--calls`` calls of
``batch("sentiment", 1,000 docs)`` from one ``clients.wire`` client (ms a call,
server CPU a call). Medians of rounds. Writes bench/RESULTS-model-threads.md.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from bench.cache import config, run_stream, stream
from bench.common import BENCH, TMP, child_env, cpu_seconds, load_texts, median
from bench.report import fmt, run_line, table
from bench.servers import Fleet

RESULTS = BENCH / "RESULTS-model-threads.md"
BATCH_DOCS = 1000


def arms() -> dict[str, dict]:
    """Each arm's environment: expertd's own sizing, and TensorFlow's default."""
    from expertd.rpc_server.model_threads import model_threads_env

    chosen = model_threads_env(1, {})
    return {"expertd (" + ", ".join(f"{k.split('_')[2].lower()} {v}" for k, v in chosen.items())
            + ")": {k: v for k, v in child_env().items() if not k.startswith("TF_NUM_")},
            "TensorFlow default": child_env(TF_NUM_INTRAOP_THREADS="0",
                                            TF_NUM_INTEROP_THREADS="0")}


def batch_calls(server, docs: list[dict], calls: int) -> dict:
    """``calls`` calls of ``batch("sentiment", docs)``: median ms a call and server CPU ms a call."""
    from expertd.clients.wire import Connection

    with Connection(server.url, timeout=120.0) as connection:
        before = cpu_seconds(server.pid)
        took = []
        for _ in range(calls):
            began = time.perf_counter()
            answer = connection.call("batch", "sentiment", docs)
            took.append(time.perf_counter() - began)
        cpu = cpu_seconds(server.pid) - before
    if len(answer) != len(docs):
        raise RuntimeError(f"batch answered {len(answer)} of {len(docs)} documents")
    return {"ms": median(took) * 1e3, "cpu_ms": cpu / calls * 1e3}


def main(argv: list[str] | None = None) -> None:
    """Start the servers, run the rounds, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    texts = sorted(set(load_texts()))
    random.Random(7).shuffle(texts)
    batch_docs = [{"text": t} for t in texts[:BATCH_DOCS]]
    work = TMP / "model-threads"
    load_before = os.getloadavg()
    began = time.time()
    streams: dict[str, list[dict]] = {}
    batches: dict[str, list[dict]] = {}
    with Fleet() as fleet:
        path = config(work / "sentiment.yaml", 0)
        # Two servers an arm, started in the order A, B, B, A: where a server sits in the
        # start order moved its speed by ~10% in trials on this machine (bench/cache.py).
        (a, env_a), (b, env_b) = arms().items()
        servers = {(a, 1): fleet.expertd("threads-a1", path, env=env_a),
                   (b, 1): fleet.expertd("threads-b1", path, env=env_b),
                   (b, 2): fleet.expertd("threads-b2", path, env=env_b),
                   (a, 2): fleet.expertd("threads-a2", path, env=env_a)}
        fleet.wait_ready(list(servers.values()))
        warm, _ = stream(texts, 2_000, 0.0, "warm-up", random.Random(0), work / "warm.jsonl")
        for server in servers.values():
            run_stream(server, warm, 2_000)
            batch_calls(server, batch_docs, 3)
        rng = random.Random(2014)
        for round_no in range(args.rounds):
            order = list(servers) if round_no % 2 == 0 else list(servers)[::-1]
            jsonl, _ = stream(texts, args.docs, 0.0, f"r{round_no}", rng, work / "stream.jsonl")
            for key in order:
                streams.setdefault(key[0], []).append(run_stream(servers[key], jsonl, args.docs))
            for key in order:
                batches.setdefault(key[0], []).append(
                    batch_calls(servers[key], batch_docs, args.calls))
    elapsed = time.time() - began
    rows = []
    for name in streams:
        rows.append([name,
                     fmt(median(r["docs_per_s"] for r in streams[name]), 0),
                     fmt(median(r["server_cpu_us_per_doc"] for r in streams[name]), 1),
                     fmt(median(r["ms"] for r in batches[name]), 2),
                     fmt(median(r["cpu_ms"] for r in batches[name]), 1)])
    load_after = os.getloadavg()
    lines = [
        "# TensorFlow's thread pools in one server process",
        "",
        run_line(f"python -m bench.model_threads --rounds {args.rounds} --docs {args.docs} "
                 f"--calls {args.calls}", elapsed, load_after, load_before) +
        "Four sentiment-only servers started together (A, B, B, A), differing only in "
        "TensorFlow's pool sizes; each arm's two servers pooled; each round, in an order "
        "alternating by round, one stream of "
        f"{args.docs:,} new documents through `expertd pipe sentiment --lines` to each, then "
        f"{args.calls} calls of `batch(\"sentiment\", {BATCH_DOCS:,} docs)` to each from one "
        "client. Medians of rounds; server CPU is utime + stime of the server process (every "
        "thread, the model's included; 10 ms clock ticks).",
        "",
        *table(["server", "stream docs/s", "stream server CPU µs/doc", "batch ms a call",
                "batch server CPU ms a call"], rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
