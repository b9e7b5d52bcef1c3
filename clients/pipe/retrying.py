"""When to ask again: the catalogue's ``retryable`` rule, backoff, and how a stream stops.

A call that failed for a reason the catalogue marks retryable (a lost
connection, ``Overloaded``, ``ShuttingDown``, a timed-out call) is asked
again with exponential backoff and jitter until ``--timeout`` has passed
since its first failure: overload and restarts cost a stream time, never a
document. Anything else is the caller's to handle.
"""

from __future__ import annotations

import os
import time

from expertd.spec import exit_code, is_retryable, kind
from expertd.clients.wire import CallTimeout, RemoteError, ServerUnavailable


class Stop(Exception):
    """The stream cannot go on: ``message`` says why, ``code`` is the exit status.

    Every line not yet written is written through unchanged before the stage exits.
    """

    def __init__(self, message: str, code: int) -> None:
        """Say why, and with which exit status."""
        super().__init__(message)
        self.code = code


def error_name(exc: BaseException) -> str:
    """The catalogue name of a failed call: the remote error's, or the client side's."""
    if isinstance(exc, RemoteError):
        return exc.name
    if isinstance(exc, CallTimeout):
        return "RpcTimeout"
    if isinstance(exc, (ServerUnavailable, OSError)):
        return "ServerUnavailable"
    return "InternalError"


def describe(exc: BaseException) -> str:
    """``Name: message`` of a failed call."""
    if isinstance(exc, RemoteError):
        return f"{exc.name}: {exc.msg}"
    return f"{error_name(exc)}: {exc}"


def retryable(exc: BaseException) -> bool:
    """True if the catalogue says a call that failed so may succeed when asked again."""
    return is_retryable(error_name(exc))


def stop_for(exc: BaseException, endpoint: str, waited: float | None = None) -> Stop:
    """The ``Stop`` for a call that failed with ``exc`` (after ``waited`` seconds of retries)."""
    name = error_name(exc)
    hint = kind(name).hint
    if waited is not None:
        message = (f"{endpoint} still failed after {waited:g} s of retries "
                   f"({describe(exc)}); {hint}")
    else:
        message = f"{endpoint} answered {describe(exc)}; {hint}"
    return Stop(message + ". Lines not yet answered were written through unchanged.",
                exit_code(name))


class Backoff:
    """Exponential backoff with jitter, bounded by a deadline."""

    def __init__(self, timeout: float, first: float = 0.05, most: float = 1.0) -> None:
        """Allow retries for ``timeout`` seconds from now."""
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.delay, self.most = first, most

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def waited(self) -> float:
        """Seconds since the first failure."""
        return time.monotonic() - self.started

    def sleep(self) -> bool:
        """Wait before the next try; False (without waiting) if that would pass the deadline."""
        pause = self.delay * (0.5 + int.from_bytes(os.urandom(2), "big") / 131070)
        if time.monotonic() + pause > self.deadline:
            return False
        time.sleep(pause)
        self.delay = min(self.delay * 2, self.most)
        return True
