"""Section 5: ``batch("sentiment", 1000 docs)`` against the model's in-process throughput.

The server is called through the lean ``clients.wire`` connection from this
(TensorFlow-free) process; the reference is ``bench.inprocess``, a separate
process that holds the same model. Rounds alternate: K timed batch calls,
then K in-process passes over the same 1,000 texts, and so on.
"""

from __future__ import annotations

import json
import select
import time

from bench.common import median, ratio
from bench.servers import Server


def _read_line(worker: Server, timeout: float) -> dict:
    """The next JSON line from the worker, or an error with its log."""
    ready, _, _ = select.select([worker.process.stdout], [], [], timeout)
    line = worker.process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"in-process worker gave no answer in {timeout:.0f} s:\n"
                           f"{worker.log_tail()}")
    return json.loads(line)


def batch_vs_inprocess(endpoint: str, worker: Server, texts: list[str], rounds: int,
                       reps: int) -> dict:
    """Medians of documents per second for the server's ``batch`` and the model alone."""
    from expertd.clients.wire import Connection

    ready = _read_line(worker, 240.0)
    docs = [{"text": t} for t in texts]
    if ready.get("texts") != len(docs):
        raise RuntimeError(f"worker holds {ready.get('texts')} texts, expected {len(docs)}")
    server_s: list[float] = []
    graph_s: list[float] = []
    predict_s: list[float] = []
    with Connection(endpoint, timeout=120.0) as connection:
        for _ in range(2):  # warm-up
            answer = connection.call("batch", "sentiment", docs)
        if len(answer) != len(docs) or "label" not in answer[0]:
            raise RuntimeError(f"batch answered {len(answer)} opinions for {len(docs)} docs")
        for _ in range(rounds):
            for _ in range(reps):
                began = time.perf_counter()
                connection.call("batch", "sentiment", docs)
                server_s.append(time.perf_counter() - began)
            worker.process.stdin.write(json.dumps({"reps": reps}) + "\n")
            worker.process.stdin.flush()
            result = _read_line(worker, 120.0)
            graph_s += result["graph_s"]
            predict_s += result["predict_s"]
    n = len(docs)
    server = n / median(server_s)
    graph = n / median(graph_s)
    predict = n / median(predict_s)
    return {
        "documents": n,
        "calls": len(server_s),
        "server_docs_per_s": server,
        "server_ms": median(server_s) * 1000.0,
        "graph_docs_per_s": graph,
        "graph_ms": median(graph_s) * 1000.0,
        "predict_docs_per_s": predict,
        "predict_ms": median(predict_s) * 1000.0,
        "vs_graph": ratio(server, graph),
        "vs_predict": ratio(server, predict),
    }
