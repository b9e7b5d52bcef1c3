"""TensorFlow's thread pools in a server process: how many threads, set before any model loads.

TensorFlow reads ``TF_NUM_INTRAOP_THREADS`` and ``TF_NUM_INTEROP_THREADS`` once,
when it starts; a variable the user set always wins. The supervisor gives each
of its workers its share of the cores (``model_threads_env``); one server
process sizes its own (``size_model_threads``).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("expertd.server")

#: TensorFlow's thread pools (its own environment variables, read when it starts).
TF_THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def size_model_threads(environ: dict = os.environ) -> dict:
    """Size this one server process's TensorFlow pools (``model_threads_env(1, ...)``) in
    ``environ``, before any model loads; log and return what was set (nothing if the
    environment, or this process's supervisor, set them already)."""
    sizes = model_threads_env(1, environ)
    if sizes:
        environ.update(sizes)
        log.info("TensorFlow thread pools: %s (set TF_NUM_INTRAOP_THREADS and "
                 "TF_NUM_INTEROP_THREADS to choose)",
                 ", ".join(f"{key}={value}" for key, value in sizes.items()))
    return sizes


def model_threads_env(processes: int, environ: dict, cpus: int | None = None) -> dict:
    """TensorFlow thread-pool sizes for one of ``processes`` server processes on these cores.

    Each TensorFlow process sizes its pools to every core. N workers on C cores
    then run N x C threads that wait on each other (a stream cost the workers
    about 2 us more CPU per document, 6-8%, on 2 cores): each gets ``C // N``.
    One process gets ``C - 1``, leaving a core to its serving loop (decoding,
    checks and answers, Python that runs while the model does): on 2 cores a
    server then spends a little less CPU per streamed document, as fast
    (bench/RESULTS-model-threads.md). At least 1 thread for the ops and
    at least 2 to run them on; nothing where ``environ`` sets either variable.
    """
    if any(key in environ for key in TF_THREAD_ENV):
        return {}
    cpus = cpus or len(os.sched_getaffinity(0))
    share = max(1, cpus - 1) if processes <= 1 else max(1, cpus // processes)
    return dict(zip(TF_THREAD_ENV, (str(share), str(max(2, share)))))
