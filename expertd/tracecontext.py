"""W3C trace context (``traceparent``) for expertd's calls: parse, make, and take it from the environment.

One id per call, end to end: the bridge takes a ``traceparent`` HTTP header
(or starts a trace), and every expertd client sends the caller's traceparent
in the ``expertd_traceparent`` header of a zerorpc request
(``expertd.spec.TRACE_HEADER``), so the server's log line and spans for the
call carry the same trace id. A command-line caller (the pipe stage, a script
using ``ExpertsClient``) takes its parent from ``TRACEPARENT``, as
OpenTelemetry specifies for environment-variable propagation. This module is
the whole of it when tracing is off: no OpenTelemetry import, a few string
operations per call.
"""

from __future__ import annotations

import os

from expertd.records import record

#: ``version-traceid-parentid-flags``; a future version may append fields after a dash.
#: Compiled at the first parse (a pipe stage without TRACEPARENT never pays for it).
_TRACEPARENT = r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: The environment variable a command-line tool takes its parent context from.
ENV_TRACEPARENT = "TRACEPARENT"


# expertd.records.record, not collections.namedtuple (nor typing.NamedTuple): the pipe stage starts faster.
class TraceParent(record("TraceParent", "trace_id span_id flags", defaults=(1,))):
    """A parsed traceparent: ``trace_id`` (32 hex digits), ``span_id`` (16), the ``flags`` byte."""

    __slots__ = ()

    @property
    def sampled(self) -> bool:
        """Whether the caller records this trace (the flags' sampled bit)."""
        return bool(self.flags & 1)

    def header(self) -> str:
        """The ``traceparent`` string (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def parse(value: object) -> TraceParent | None:
    """The traceparent in ``value``, or ``None`` when it is not a valid one (W3C rules)."""
    if not isinstance(value, str) or len(value) > 512:
        return None
    import re  # here, not at import: a pipe stage without TRACEPARENT never loads it

    match = re.match(_TRACEPARENT, value.strip())  # re caches the compiled pattern
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, int(flags, 16))


def new_trace_id() -> str:
    """A random trace id (32 hex digits)."""
    return os.urandom(16).hex()


def new_span_id() -> str:
    """A random span id (16 hex digits)."""
    return os.urandom(8).hex()


def from_environment(environ: dict | None = None) -> TraceParent | None:
    """The parent context a command-line caller was given in ``TRACEPARENT`` (``None`` if none or invalid)."""
    return parse((os.environ if environ is None else environ).get(ENV_TRACEPARENT))


def child_of(parent: TraceParent | None) -> TraceParent:
    """A new span's context: in ``parent``'s trace (keeping its sampling) or in a new sampled trace."""
    if parent is None:
        return TraceParent(new_trace_id(), new_span_id(), 1)
    return TraceParent(parent.trace_id, new_span_id(), parent.flags)


#: ``_valid_header``'s answers (a few values at most: TRACEPARENT as it changes).
_VALID_HEADERS: dict[str, str | None] = {}


def _valid_header(value: str) -> str | None:
    """``value`` as a valid traceparent header, or ``None`` (cached; not functools.lru_cache:
    a pipe stage would import functools for it)."""
    try:
        return _VALID_HEADERS[value]
    except KeyError:
        pass
    if len(_VALID_HEADERS) >= 8:
        _VALID_HEADERS.clear()
    parsed = parse(value)
    _VALID_HEADERS[value] = header = parsed.header() if parsed is not None else None
    return header


def environment_traceparent() -> str | None:
    """``TRACEPARENT`` as a valid traceparent string to send with a call, else ``None`` (cheap: cached)."""
    value = os.environ.get(ENV_TRACEPARENT)
    return _valid_header(value) if value else None
