"""The trace context of the current call, from its event header (``expertd_traceparent``).

A caller may put its W3C traceparent in a request's header
(``expertd.spec.TRACE_HEADER``; a coalesced call from the bridge also lists
the traceparent of each request it serves, ``TRACE_LINKS_HEADER``); stock
zerorpc clients never send them and never see them. ``TraceMiddleware`` (a
zerorpc context middleware) reads them when a call starts, in the call's
greenlet; a call without one starts a trace of its own, so that every log
line about a call carries a trace id. ``current()`` gives the call's
``CallTrace``; spans, when tracing is on, hang under its ``parent``.
"""

from __future__ import annotations

from typing import NamedTuple

import gevent.local

from expertd import tracecontext
from expertd.spec import TRACE_HEADER, TRACE_LINKS_HEADER
from expertd.tracecontext import TraceParent

_call = gevent.local.local()
#: Most links read from one call's header (a coalesced call serves at most a few hundred).
MAX_LINKS = 1024


class CallTrace(NamedTuple):
    """A call's trace: its id, the caller's context (``None``: the server started it), the linked requests."""

    trace_id: str
    parent: TraceParent | None = None
    links: tuple[TraceParent, ...] = ()

    def log_field(self) -> str:
        """`` trace=ID`` (plus `` links=ID,...`` for the requests of a coalesced call) for a log line."""
        if not self.links:
            return f" trace={self.trace_id}"
        ids = ",".join(dict.fromkeys(link.trace_id for link in self.links))
        return f" trace={self.trace_id} links={ids}"


def read_header(header: object) -> CallTrace:
    """The ``CallTrace`` a request's header gives (a new trace when it holds no valid traceparent)."""
    parent = links = None
    if isinstance(header, dict):
        parent = tracecontext.parse(header.get(TRACE_HEADER))
        raw = header.get(TRACE_LINKS_HEADER)
        if isinstance(raw, (list, tuple)):
            links = tuple(p for p in map(tracecontext.parse, raw[:MAX_LINKS]) if p is not None)
    trace_id = parent.trace_id if parent is not None else tracecontext.new_trace_id()
    return CallTrace(trace_id, parent, links or ())


class TraceMiddleware:
    """zerorpc middleware: note the caller's trace context when a call's task starts."""

    def load_task_context(self, header) -> None:
        """Called by zerorpc with the request's header, in the call's greenlet."""
        _call.trace = read_header(header)
        _call.span = None


def current() -> CallTrace | None:
    """The current call's trace (``None`` outside a call)."""
    return getattr(_call, "trace", None)


def enter(span) -> None:
    """The current call's span began (``expertd.tracing``): its context is the parent of the call's work.

    A recording span that started a trace of its own gives the call its trace id.
    """
    _call.span = span.context
    trace = getattr(_call, "trace", None)
    if span.context is not None and trace is not None and trace.trace_id != span.context.trace_id:
        _call.trace = trace._replace(trace_id=span.context.trace_id)


def span_context() -> TraceParent | None:
    """The context the current call's work hangs under: its span's, else the caller's (``None``: none)."""
    context = getattr(_call, "span", None)
    if context is not None:
        return context
    trace = getattr(_call, "trace", None)
    return trace.parent if trace is not None else None
