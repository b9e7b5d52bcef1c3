"""Interpreter settings for a server whose model threads share the GIL with the gevent loop,
and the memory a big call leaves behind.

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

Memory after a big call (``python -m bench.memory``, bench/RESULTS-memory.md:
the default experts, ready at about 620 MiB resident, one 100,000-document
``opinions_batch`` over every expert from the stock client, twice):

* Before: 968-980 MiB after the first call (+55%), 1,039-1,046 MiB after the
  second (+67%), the same 20 s later. ``MALLOC_ARENA_MAX=2`` (+52%, +66%) and
  a fixed ``MALLOC_MMAP_THRESHOLD_`` (+51%, +61%) barely changed it;
  ``malloc_trim(0)`` after the call alone neither (+51%, +62%).
* Most of it was the last call kept alive: zerorpc's acceptor kept the call's
  event (its documents) until the next call, each batcher kept its last
  request (documents and answers), zerorpc's sender and receiver their last
  message (``transport.server``, ``batching``). Without them: +36%, +43%.
* The rest is Python's own allocator: pymalloc frees a 1 MiB arena only once
  every object in it is gone, and a few objects made during the call (by
  other calls, metrics, threads) pin most of the arenas the call used: 129
  arenas when ready, 327 after the call, 192 MiB of them in unused pools.
  With ``PYTHONMALLOC=malloc`` every free goes back to glibc, and
  ``malloc_trim(0)`` (``release_memory_soon``, after the last big call)
  returns it: +12% and +8% after the two calls (+11%, +18% before the
  sender/receiver fix). So ``expertd serve`` re-executes itself with
  ``PYTHONMALLOC=malloc`` unless the variable is set (``use_system_allocator``).
  Its cost on one-document calls, measured side by side in one run
  (bench/RESULTS-memory.md, "Allocator throughput"): none measurable
  (an earlier run on a machine at a load average of about 9 gave 0.56-0.95x,
  and 0.58-1.04x for a 20,000-document ``opinions_batch``). Set
  ``PYTHONMALLOC=pymalloc`` to keep Python's own allocator and its held memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

import gevent

#: The GIL switch interval while a big call is served, seconds.
SWITCH_INTERVAL = 0.001
#: The GIL switch interval otherwise (Python's default).
NORMAL_SWITCH_INTERVAL = 0.005
#: A call with more documents than this is a big call (a full chunk of a batcher).
BIG_CALL_DOCS = 1024
#: Young collections between two full ones (Python's default is 10).
FULL_COLLECTION_EVERY = 100


#: Seconds after the last big call ends before free memory is handed back (its answer is sent by then).
TRIM_AFTER_S = 0.5

_big_calls = 0
_trim_pending = False


def _malloc_trim():
    """glibc's ``malloc_trim`` (``None`` elsewhere, e.g. musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()


def use_system_allocator(environ: dict = os.environ) -> None:
    """Re-execute this process with ``PYTHONMALLOC=malloc``, unless ``PYTHONMALLOC`` is set.

    The process keeps its pid, arguments and open files. Why (see the module
    docstring): memory a big call used goes back to the system after it.
    ``PYTHONMALLOC=pymalloc`` keeps Python's own allocator.
    """
    if environ.get("PYTHONMALLOC"):
        return
    environ["PYTHONMALLOC"] = "malloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (``malloc_trim(0)``, every arena).

    Run in the hub's native thread pool: ctypes releases the GIL, so the loop
    keeps serving while the heap is walked.
    """
    if _trim is not None:
        gevent.get_hub().threadpool.apply(_trim, (0,))


def _release_if_idle() -> None:
    global _trim_pending
    _trim_pending = False
    if _big_calls == 0:
        release_memory()


def release_memory_soon() -> None:
    """``release_memory`` ``TRIM_AFTER_S`` from now, unless a big call is then in flight
    (its own end asks again)."""
    global _trim_pending
    if not _trim_pending:
        _trim_pending = True
        gevent.spawn_later(TRIM_AFTER_S, _release_if_idle)


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
            release_memory_soon()


def big_call_if(documents: int) -> ContextManager:
    """``big_call()`` for a call of more than ``BIG_CALL_DOCS`` documents, else nothing."""
    return big_call() if documents > BIG_CALL_DOCS else nullcontext()
