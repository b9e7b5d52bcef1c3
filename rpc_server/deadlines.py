"""How long the caller of the current call will wait, from its event header.

A caller may put ``expertd_timeout_ms`` (``expertd.spec.TIMEOUT_HEADER``)
in a request's header; stock zerorpc clients never send it and never see it.
``DeadlineMiddleware`` (a zerorpc context middleware) reads it when a call
starts; ``current_deadline()`` gives the ``time.monotonic()`` by which the
answer must be ready, or ``None`` when the caller did not say.
"""

from __future__ import annotations

import math
import time

import gevent.local

from expertd.spec import TIMEOUT_HEADER

_call = gevent.local.local()
#: A stated timeout above this (a day) is treated as "no deadline".
_LONGEST_MS = 86_400_000


class DeadlineMiddleware:
    """zerorpc middleware: note the caller's deadline when a call's task starts."""

    def load_task_context(self, header) -> None:
        """Called by zerorpc with the request's header, in the call's greenlet."""
        value = header.get(TIMEOUT_HEADER) if isinstance(header, dict) else None
        _call.deadline = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                math.isfinite(value) and 0 < value <= _LONGEST_MS:
            _call.deadline = time.monotonic() + value / 1000.0


def current_deadline() -> float | None:
    """The current call's deadline (``time.monotonic()``), or ``None``."""
    return getattr(_call, "deadline", None)
