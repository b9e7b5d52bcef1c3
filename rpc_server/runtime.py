"""Interpreter settings for a server whose model threads share the GIL with the gevent loop.

Measured with a 100,000-document batch running beside one-document calls
(``python -m bench.overload --one-document``, and a trace of each model call):

* **GIL switch interval.** Model calls run in native threads that need the GIL
  for their Python parts while the loop decodes or merges a big call (and the
  other way round). At Python's default of 5 ms one-document calls took
  41-66 ms at the 99th percentile inside the server, 18-21 ms at 0.5 ms (two
  interleaved rounds on a shared 2-core machine). A shorter interval costs
  throughput: a streaming pipe stage lost about 20% of its documents per
  second at 0.5 ms (``python -m bench.scale --only stream``), so 1 ms.
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

#: The GIL switch interval, seconds (Python's default is 0.005).
SWITCH_INTERVAL = 0.001
#: Young collections between two full ones (Python's default is 10).
FULL_COLLECTION_EVERY = 100


def tune() -> None:
    """Apply the settings above to this process (idempotent)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
