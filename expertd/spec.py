"""The protocol written once: the Python loader of ``expertd/protocol.json``.

Python (``rpc_server`` for the methods it serves and the errors it raises,
``clients`` for defaults, header keys, retry rules and the pipe's exit codes)
and Node (``express_bridge/src/spec.js``) read the same file, so a default, a
header key, a method's arguments, a ``health()`` field, a retry parameter or
an error's name, status, retry rule and exit code are written once.
``docs/protocol.md`` explains it. This module imports nothing heavy: the pipe
stage uses it.
"""

from __future__ import annotations

import os
from expertd import jsonc
from expertd.records import record

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.json")


def _read() -> dict:
    # os.path and open, not pathlib: the pipe stage imports this module, and
    # pathlib would add a few milliseconds to every stage.
    with open(PATH, encoding="utf-8") as file:
        return jsonc.loads(file.read())  # not json: see expertd/jsonc.py


def _entries(section: dict) -> dict:
    """A section without its ``_comment``."""
    return {key: value for key, value in section.items() if not key.startswith("_")}


#: The whole file, as read (``_comment`` keys included).
RAW: dict = _read()

# -- defaults ----------------------------------------------------------------------------

_DEFAULTS = RAW["defaults"]
#: Where clients look for the server, and where ``expertd serve`` binds, when neither an
#: option nor ``EXPERTD_ENDPOINT`` says.
DEFAULT_ENDPOINT: str = _DEFAULTS["endpoint"]
#: The default endpoint's host and port (the port is also the one suggested when missing).
DEFAULT_HOST: str = _DEFAULTS["host"]
DEFAULT_PORT: int = _DEFAULTS["port"]
#: The HTTP bridge's default HOST and PORT.
BRIDGE_HOST: str = _DEFAULTS["bridge_host"]
BRIDGE_PORT: int = _DEFAULTS["bridge_port"]
#: zerorpc's heartbeat interval, seconds.
HEARTBEAT_S: float = _DEFAULTS["heartbeat_s"]

# -- header keys --------------------------------------------------------------------------

#: The header keys expertd reads in a request (stock clients never send them), by role:
#: ``{"key": wire key, "type", "sent_by", "doc"}``.
HEADERS: dict[str, dict] = _entries(RAW["headers"])
#: The optional header key in which a caller says how many milliseconds it will wait.
TIMEOUT_HEADER: str = HEADERS["deadline"]["key"]
#: The optional header key holding the caller's W3C traceparent (``expertd.tracecontext``).
TRACE_HEADER: str = HEADERS["trace"]["key"]
#: The optional header key listing the traceparents of the requests a coalesced call serves.
TRACE_LINKS_HEADER: str = HEADERS["trace_links"]["key"]

# -- methods ------------------------------------------------------------------------------


# expertd.records.record, not collections.namedtuple (nor typing.NamedTuple): the pipe stage starts faster.
class Method(record("Method", "name args stateful result admin", defaults=(False,))):
    """One RPC method of the service: its ``name``, its positional ``args`` (a tuple of
    str, ``?``: optional), whether it is ``stateful`` (bool), its ``result`` (str), and
    whether it is ``admin`` (it changes what the server serves: answered only to local or
    CURVE-authorised callers)."""

    __slots__ = ()

    @property
    def required(self) -> tuple[str, ...]:
        """The arguments a call must pass."""
        return tuple(a for a in self.args if not a.endswith("?"))

    @property
    def names(self) -> tuple[str, ...]:
        """Every argument's name (without the ``?``)."""
        return tuple(a.rstrip("?") for a in self.args)


#: The service's RPC methods, by name, in the file's order.
METHODS: dict[str, Method] = {
    name: Method(name=name, args=tuple(entry["args"]), stateful=entry["stateful"], result=entry["result"],
                 admin=entry.get("admin", False))
    for name, entry in _entries(RAW["methods"]).items()}


class _Names:
    """``names.x == "x"`` for each name of a spec section; a misspelt one raises ``AttributeError``,
    so code names methods and errors as identifiers, never in strings."""

    __slots__ = ("_names", "_what")

    def __init__(self, names, what: str) -> None:
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_what", what)

    def __getattr__(self, name: str) -> str:
        if name in self._names:
            return name
        raise AttributeError(f"no {self._what} {name!r} in {PATH}")

    def __dir__(self) -> list[str]:
        return sorted(self._names)


#: The method names, e.g. ``METHOD.opinions_batch``.
METHOD = _Names(METHODS, "method")
#: Methods that change the server's state (``learn``).
STATEFUL_METHODS: frozenset[str] = frozenset(m.name for m in METHODS.values() if m.stateful)
#: Admin methods (``expert_load``, ...): local or CURVE-authorised callers only.
ADMIN_METHODS: frozenset[str] = frozenset(m.name for m in METHODS.values() if m.admin)

#: The fields of ``health()``'s answer, with their type and meaning.
HEALTH_FIELDS: dict[str, dict] = _entries(RAW["health"])

def health_fields(*names: str) -> tuple[str, ...]:
    """``names``, checked to be fields of ``health()`` (a reader relying on another is a bug)."""
    unknown = [n for n in names if n not in HEALTH_FIELDS]
    if unknown:
        raise KeyError(f"health() has no field {', '.join(unknown)} ({PATH})")
    return names


# -- errors -------------------------------------------------------------------------------


class ErrorKind(record("ErrorKind", "name summary status retryable per_document exit side hint")):
    """What every side must agree on about one error name: ``name``, ``summary``, ``status``
    (int), ``retryable`` and ``per_document`` (bool), ``exit`` (int), ``side``, ``hint``."""

    __slots__ = ()


#: Every error name, in the catalogue's order.
ERRORS: dict[str, ErrorKind] = {name: ErrorKind(name=name, **fields)
                                for name, fields in _entries(RAW["errors"]).items()}


#: The name an error the catalogue does not know is treated as (``InternalError``).
UNKNOWN_ERROR: str = RAW["errors"]["_unknown"]


#: The error names, e.g. ``ERROR.RpcTimeout`` (``ERROR.Overloaded == "Overloaded"``).
ERROR = _Names(ERRORS, "error")


def kind(name: str) -> ErrorKind:
    """The catalogue entry for ``name``; an unknown name is treated as ``UNKNOWN_ERROR``."""
    return ERRORS.get(name) or ERRORS[UNKNOWN_ERROR]


def is_retryable(name: str) -> bool:
    """True if a call that failed with ``name`` may succeed when asked again."""
    return kind(name).retryable


def exit_code(name: str) -> int:
    """The pipe stage's exit status when ``name`` is why a document got no opinion."""
    return kind(name).exit


# -- retry policy (applied by expertd.retry) ---------------------------------------------

#: Errors answered before the method runs (so even a stateful call may be asked again).
REFUSED_BEFORE_RUNNING: frozenset[str] = frozenset(RAW["retry"]["refused_before_running"])
#: Each client's backoff parameters: base_s, factor, cap_s, jitter [low, high], and its own.
RETRY_PROFILES: dict[str, dict] = RAW["retry"]["profiles"]


def may_ask_again(method: str, name: str) -> bool:
    """True if a call of ``method`` that failed with ``name`` may be asked again.

    A retryable failure, and for a stateful method only one the server gave
    before running it: after a lost connection or a timeout it may have run.
    """
    return is_retryable(name) and (method not in STATEFUL_METHODS or name in REFUSED_BEFORE_RUNNING)
