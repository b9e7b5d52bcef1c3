"""The error catalogue: one JSON file (``errors.json``) that every side reads.

Python (``rpc_server`` for what it raises, ``clients`` for retry rules and the
pipe's exit codes) and Node (``express_bridge`` for HTTP statuses) read the
same file, so an error's name, status, retry rule, scope and exit code are
written once. This module imports nothing heavy: the pipe stage uses it.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "errors.json")


def _read() -> dict:
    # os.path and open, not pathlib: the pipe stage imports this module, and
    # pathlib would add a few milliseconds to every stage.
    with open(PATH, encoding="utf-8") as file:
        return json.load(file)


class ErrorKind(NamedTuple):
    """What every side must agree on about one error name."""

    name: str
    status: int
    retryable: bool
    per_document: bool
    exit: int
    side: str
    hint: str


def _load() -> dict[str, ErrorKind]:
    raw = _RAW["errors"]
    return {name: ErrorKind(name=name, **fields) for name, fields in raw.items()}


_RAW = _read()

#: Every error name, in the catalogue's order.
ERRORS: dict[str, ErrorKind] = _load()


def kind(name: str) -> ErrorKind:
    """The catalogue entry for ``name``; an unknown name is treated as ``InternalError``."""
    return ERRORS.get(name) or ERRORS["InternalError"]


def is_retryable(name: str) -> bool:
    """True if a call that failed with ``name`` may succeed when asked again."""
    return kind(name).retryable


def exit_code(name: str) -> int:
    """The pipe stage's exit status when ``name`` is why a document got no opinion."""
    return kind(name).exit


#: The optional header key in which a caller says how many milliseconds it will wait.
TIMEOUT_HEADER: str = _RAW["protocol"]["timeout_header"]
#: Methods that change the server's state (``learn``).
STATEFUL_METHODS: frozenset[str] = frozenset(_RAW["protocol"]["stateful_methods"])
#: Errors answered before the method runs (so even a stateful call may be asked again).
REFUSED_BEFORE_RUNNING: frozenset[str] = frozenset(_RAW["protocol"]["refused_before_running"])


def may_ask_again(method: str, name: str) -> bool:
    """True if a call of ``method`` that failed with ``name`` may be asked again.

    A retryable failure, and for a stateful method only one the server gave
    before running it: after a lost connection or a timeout it may have run.
    """
    return is_retryable(name) and (method not in STATEFUL_METHODS or name in REFUSED_BEFORE_RUNNING)
