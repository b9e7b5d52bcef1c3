"""The cycle collector in a process holding the sentiment model: with and without ``gc.freeze``.

``python -m bench.collector`` runs, in two fresh processes that each load the model
as the server does, 300 calls of 1,000 new texts through an ``OpinionCache`` of
100,000 (a stand-in model answers), once as the server did before
``rpc_server/collector.py`` and once after ``freeze_loaded``; it prints the CPU per
document and the full collections Python made (and how long each took). Run it
with an older ``opinion_cache.py`` on ``PYTHONPATH`` to see what untracked entries
change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

CALLS, DOCS = 300, 1000


def child(freeze: bool) -> dict:
    """One process's numbers."""
    import gc

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.common import MODEL_DIR
    from expertd.experts.keras_text import SentimentExpert
    from expertd.rpc_server import collector
    from expertd.rpc_server.opinion_cache import OpinionCache

    SentimentExpert("sentiment", model_dir=str(MODEL_DIR)).load()
    tracked = len(gc.get_objects())
    if freeze:
        collector.freeze_loaded()
    full: list[float] = []
    began: list[float] = []

    def watch(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            (began if phase == "start" else full).append(time.perf_counter())

    gc.callbacks.append(watch)
    cache = OpinionCache(100_000, lambda: "2")
    opinion = {"valence": 0.5, "label": "positive", "confidence": 0.9}
    cpu = time.process_time()
    for call in range(CALLS):
        texts = [f"{call}.{i} a sentence about as long as the ones people send" for i in range(DOCS)]
        cache.predict_through(texts, lambda asked: [(True, dict(opinion)) for _ in asked])
    cpu = time.process_time() - cpu
    gc.callbacks.remove(watch)
    return {"freeze": freeze, "tracked_after_load": tracked,
            "cpu_us_per_doc": cpu / (CALLS * DOCS) * 1e6,
            "full_collections_ms": [(end - start) * 1000 for start, end in zip(began, full)]}


def main() -> None:
    """Both arms, each in its own process; prints one JSON line per arm."""
    if len(sys.argv) > 1 and sys.argv[1] in ("--freeze", "--no-freeze"):
        print(json.dumps(child(sys.argv[1] == "--freeze")))
        return
    for arm in ("--no-freeze", "--freeze"):
        done = subprocess.run([sys.executable, "-m", "bench.collector", arm], capture_output=True,
                              text=True, check=True)
        print(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
