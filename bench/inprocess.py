"""The physical limit: the sentiment model's own throughput, in a process of its own.

Loads the model exactly as the server does (``SentimentExpert.load``: one
``tf.function`` with a fixed ``input_signature``), then answers commands on
stdin, one JSON line each, so the runner can interleave it with the server:

    {"reps": 5}  ->  {"graph_s": [...], "graph_cpu_s": [...], "predict_s": [...]}

``graph_s``: seconds per call of the ``tf.function`` on all the texts
(string tensor in, numpy arrays out: the model alone); ``graph_cpu_s``: the
CPU seconds of this process (every thread) during each of those calls. ``predict_s``: seconds
per ``SentimentExpert.predict`` on the same texts (the model plus turning its
outputs into opinion dicts, what the server's batcher runs).

    python -m bench.inprocess --texts bench/tmp/texts.json --count 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    """Load, warm up, print READY, then serve commands until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", required=True, help="JSON list of texts")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from bench.common import MODEL_DIR
    from expertd.experts.keras_text import SentimentExpert

    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)[:args.count]
    expert = SentimentExpert("sentiment",
                             model_dir=args.model_dir or str(MODEL_DIR))
    expert.load()
    run = expert._run  # the tf.function the expert calls per batch

    def graph_once() -> tuple[float, float]:
        began, cpu = time.perf_counter(), time.process_time()
        out = run(tf.constant(texts, dtype=tf.string))
        {key: value.numpy() for key, value in out.items()}
        return time.perf_counter() - began, time.process_time() - cpu

    def predict_once() -> float:
        began = time.perf_counter()
        expert.predict(texts)
        return time.perf_counter() - began

    for _ in range(3):  # warm-up
        graph_once()
        predict_once()
    print(json.dumps({"ready": True, "texts": len(texts), "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        reps = int(command.get("reps", 5))
        result = {"graph_s": [], "graph_cpu_s": [], "predict_s": []}
        for _ in range(reps):
            wall, cpu = graph_once()
            result["graph_s"].append(wall)
            result["graph_cpu_s"].append(cpu)
            result["predict_s"].append(predict_once())
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
