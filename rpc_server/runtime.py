"""Interpreter settings for a server whose model threads share the GIL with the gevent loop.

Measured with a 100,000-document batch running beside one-document calls
(``python -m bench.overload --one-document``, and a trace of each model call):

* **GIL switch interval.** Model calls run in native threads that need the GIL
  for their Python parts while the loop decodes or merges a big call (and the
  other way round). At Python's default of 5 ms one-document calls took
  41-66 ms at the 99th percentile inside the server, 18-21 ms at 0.5 ms (two
  interleaved rounds on a shared 2-core machine). A shorter interval costs
  throughput everywhere else (at 1 ms the RPC rows of ``bench.run`` lost
  25-30% of their calls per second, a streaming pipe stage 20% at 0.5 ms), so
  the interval is short only while a big call is being served (``big_call``)
  and Python's 5 ms otherwise.
* **Full collections.** A 100,000-document call allocates a few hundred
  thousand container objects (answers, outcomes, merged documents) that live
  for its whole duration; at Python's default thresholds that started a full
  collection several times per batch, each scanning all of them with the loop
  stopped (18 in 20 s, 38 ms median, up to 400 ms). Young collections still
  run as often as before; full ones ten times less often.
"""

from __future__ import annotations

import gc
import sys
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

#: The GIL switch interval while a big call is served, seconds.
SWITCH_INTERVAL = 0.001
#: The GIL switch interval otherwise (Python's default).
NORMAL_SWITCH_INTERVAL = 0.005
#: A call with more documents than this is a big call (a full chunk of a batcher).
BIG_CALL_DOCS = 1024
#: Young collections between two full ones (Python's default is 10).
FULL_COLLECTION_EVERY = 100


_big_calls = 0


def tune() -> None:
    """Apply the settings above to this process (idempotent)."""
    sys.setswitchinterval(NORMAL_SWITCH_INTERVAL)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


@contextmanager
def big_call() -> Iterator[None]:
    """While any big call is inside this block, switch the GIL every ``SWITCH_INTERVAL``."""
    global _big_calls
    _big_calls += 1
    if _big_calls == 1:
        sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        _big_calls -= 1
        if _big_calls == 0:
            sys.setswitchinterval(NORMAL_SWITCH_INTERVAL)


def big_call_if(documents: int) -> ContextManager:
    """``big_call()`` for a call of more than ``BIG_CALL_DOCS`` documents, else nothing."""
    return big_call() if documents > BIG_CALL_DOCS else nullcontext()
