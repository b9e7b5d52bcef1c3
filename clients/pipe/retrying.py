"""When to ask again, for the pipe stage: the retry policy's rule and backoff, and how a stream stops.

A call that failed for a reason the spec marks retryable (a lost
connection, ``Overloaded``, ``ShuttingDown``, a timed-out call) is asked
again with exponential backoff and jitter (``expertd.retry``, the spec's
``pipe`` profile) until ``--timeout`` has passed since its first failure:
overload and restarts cost a stream time, never a document. Anything else
is the caller's to handle.
"""

from __future__ import annotations

from expertd.retry import Backoff, is_retryable
from expertd.spec import ERROR, exit_code, kind
from expertd.clients.wire import CallTimeout, RemoteError, ServerUnavailable


__all__ = ["Backoff", "Stop", "describe", "error_name", "retryable", "stop_for", "what_to_do"]


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
        return ERROR.RpcTimeout
    if isinstance(exc, (ServerUnavailable, OSError)):
        return ERROR.ServerUnavailable
    return ERROR.InternalError


def describe(exc: BaseException) -> str:
    """``Name: message`` of a failed call."""
    if isinstance(exc, RemoteError):
        return f"{exc.name}: {exc.msg}"
    return f"{error_name(exc)}: {exc}"


def retryable(exc: BaseException) -> bool:
    """True if the catalogue says a call that failed so may succeed when asked again."""
    return is_retryable(error_name(exc))


def what_to_do(name: str) -> str:
    """The catalogue's hint for error ``name``, and for a name the server does not know
    (an expert), the command that lists the names it does."""
    hint = kind(name).hint
    if name == ERROR.UnknownExpert:
        hint += " (`expertd list` shows them)"
    return hint


def stop_for(exc: BaseException, endpoint: str, waited: float | None = None) -> Stop:
    """The ``Stop`` for a call that failed with ``exc`` (after ``waited`` seconds of retries)."""
    name = error_name(exc)
    hint = what_to_do(name)
    if waited is not None:
        message = (f"{endpoint} still failed after {waited:g} s of retries "
                   f"({describe(exc)}); {hint}")
    else:
        message = f"{endpoint} answered {describe(exc)}; {hint}"
    return Stop(message + ". Lines not yet answered were written through unchanged.",
                exit_code(name))
