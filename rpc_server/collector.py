"""Python's cycle collector in a server that holds TensorFlow: freeze what loading made.

Loading the sentiment model leaves about 330,000 objects that the cycle collector
tracks (TensorFlow's and Keras's graphs, modules, op registrations). A full
collection walks every one of them: 160-200 ms on the benchmark machine, during
which the gevent loop (every call, every heartbeat) and the model thread's
Python wait. Python starts a full collection whenever the objects that survived
two younger collections grow by a quarter of the long-lived ones, and any state
that lives long does that: the cache of opinions made it happen about every 25
1,000-document calls, 4-8 µs of server CPU a document (bench/RESULTS-cache.md).

``freeze_loaded`` collects once, then ``gc.freeze()``: everything that exists now
moves to the permanent generation, which collections skip, so a full collection
walks only what was made since. What is frozen is still freed by reference
counting; only a reference cycle among frozen objects would never be collected.
So after a model version is unloaded live (its objects, frozen at start, may
hold cycles) ``thaw`` gives everything back to the collector, and the next
``freeze_loaded`` (the next live load) freezes what is left.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("expertd.server")


def freeze_loaded() -> int:
    """Collect, then freeze every object that exists now (``gc.freeze``); the number frozen."""
    began = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d objects for the cycle collector in %.0f ms", frozen,
              (time.perf_counter() - began) * 1000.0)
    return frozen


def thaw() -> None:
    """Give every frozen object back to the collector (``gc.unfreeze``): after an unload."""
    gc.unfreeze()
