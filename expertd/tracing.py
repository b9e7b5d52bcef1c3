"""OpenTelemetry spans for expertd's Python processes, on only when the standard variables say so.

Off by default, and then free: nothing here imports OpenTelemetry, and every
helper returns at once (``span()`` gives one shared do-nothing object). On
when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``: OTLP over HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``;
``console``: JSON on stderr), unless ``OTEL_SDK_DISABLED=true``. The SDK reads
the rest of the standard variables itself: ``OTEL_TRACES_SAMPLER`` (default
``parentbased_always_on``; ``parentbased_traceidratio`` with
``OTEL_TRACES_SAMPLER_ARG=0.01`` keeps 1% of new traces and follows the
caller's decision for the others), ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, the batch processor's ``OTEL_BSP_*``. The SDK is
the optional extra ``expertd[tracing]``.

Contexts travel as ``expertd.tracecontext.TraceParent`` (what the wire
carries), never through OpenTelemetry's implicit current span: a call's work
crosses greenlets (chain dependencies, the micro-batcher) and threads (the
model), so each span is given its parent explicitly.

The sampling decision is made once, at the root, and followed: under a
parent-based sampler (the default; ``parentbased_*``), a span whose parent says
"not sampled" never reaches the SDK (``span()`` gives ``NO_SPAN`` at once, and
callers ask ``records(parent)`` before building attributes), so such a call
costs what tracing off costs; it keeps its trace id (the parent's). A root the
sampler drops gives an unrecorded span whose ``context`` (flags 00) its
children follow the same way.
"""

from __future__ import annotations

import os
import time

from expertd.tracecontext import TraceParent

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import Any, Iterable


def _log():
    """This module's logger (``logging`` is imported only when there is something to say:
    a pipe stage pays for every module it imports)."""
    import logging

    return logging.getLogger("expertd.tracing")

#: Most links also written as the ``expertd.links`` attribute of a span.
MAX_LINK_ATTRIBUTES = 128
_state: dict = {"tracer": None, "checked": False, "service": "expertd-client", "parent_based": True}
#: Ring buffers (``recent.TraceRing``-like objects with ``add(span)``) fed with every span that ends.
_listeners: list = []


def configure(service_name: str) -> None:
    """Name this process's service (unless ``OTEL_SERVICE_NAME`` does); call before the first span."""
    _state["service"] = service_name


def enabled() -> bool:
    """Whether spans are recorded in this process (``OTEL_TRACES_EXPORTER`` names an exporter)."""
    if not _state["checked"]:
        _state["checked"] = True
        _state["tracer"] = _make_tracer()
    return _state["tracer"] is not None


def records(parent: TraceParent | None) -> bool:
    """Whether a span under ``parent`` (``None``: a new trace) may be recorded: tracing is on,
    and the parent is sampled unless the sampler ignores the parent's decision (not ``parentbased_*``).

    Cheap: ask it before building a span's attributes.
    """
    if not _state["checked"]:
        enabled()
    if _state["tracer"] is None:
        return False
    return parent is None or bool(parent.flags & 1) or not _state["parent_based"]


def _parent_based_sampler() -> bool:
    """Whether ``OTEL_TRACES_SAMPLER`` follows the parent's decision (the default does)."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    return not name or name.startswith("parentbased_")


def _wanted_exporters() -> list[str]:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [n for n in names if n and n != "none"]


def _make_tracer():
    names = _wanted_exporters()
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        _log().warning("OTEL_TRACES_EXPORTER=%s but the OpenTelemetry SDK is not installed; "
                    "install expertd[tracing] (pip install 'expertd[tracing]'): tracing stays off",
                    ",".join(names))
        return None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": _state["service"]}
    provider = TracerProvider(resource=Resource.create(attributes))
    _state["service_name"] = provider.resource.attributes.get("service.name", _state["service"])
    _state["parent_based"] = _parent_based_sampler()
    for name in names:
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    provider.add_span_processor(_ring_processor())
    import atexit  # only once tracing is on

    atexit.register(provider.shutdown)
    _state["provider"] = provider
    return provider.get_tracer("expertd")


def _exporter(name: str):
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                  os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
        if protocol != "http/protobuf":
            _log().warning("OTLP protocol %s is not supported here; using http/protobuf", protocol)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    _log().warning("OTEL_TRACES_EXPORTER names %r, which expertd does not know (otlp, console, none)", name)
    return None


def flush(timeout_ms: int = 5000) -> None:
    """Export the spans recorded so far (before a short-lived process exits)."""
    provider = _state.get("provider")
    if provider is not None:
        provider.force_flush(timeout_ms)


def add_listener(listener) -> None:
    """Also hand every span that ends to ``listener.add(span)`` (the in-memory ring of recent calls)."""
    _listeners.append(listener)


def _ring_processor():
    """A span processor handing finished spans to the listeners (cheap: they keep a bounded ring)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RingProcessor(SpanProcessor):
        def on_end(self, span) -> None:
            for listener in _listeners:
                listener.add(span)

    return RingProcessor()


class _NoSpan:
    """What ``span()`` gives when tracing is off: does nothing, is its own context manager."""

    context: TraceParent | None = None
    recording = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        """Nothing to set."""

    def link(self, context: TraceParent | None) -> None:
        """Nothing to link."""

    def fail(self, name: str, message: str = "") -> None:
        """Nothing to record."""

    def end(self, end_ns: int | None = None) -> None:
        """Nothing to end."""


NO_SPAN = _NoSpan()


class _Unrecorded(_NoSpan):
    """A root span the sampler dropped: records nothing, but its ``context`` (flags 00) is
    what the call's work and the calls it makes hang under, so they follow the decision."""

    def __init__(self, context: TraceParent) -> None:
        self.context = context


class Span:
    """A recording span: ``context`` (a ``TraceParent`` to send on), attributes, links, errors."""

    recording = True

    def __init__(self, otel_span) -> None:
        self._span = otel_span
        ctx = otel_span.get_span_context()
        self.context = TraceParent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", int(ctx.trace_flags))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self._span.is_recording():
            name = getattr(exc, "name", None)  # a remote error's catalogue name
            self.fail(name if isinstance(name, str) else type(exc).__name__, str(exc))
        self.end()

    def set(self, **attributes: Any) -> None:
        """Set attributes (``expertd.batch_size=3`` is written ``set(**{"expertd.batch_size": 3})``)."""
        self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def link(self, context: TraceParent | None) -> None:
        """Link this span to another (e.g. a request's queue wait to the model call that served it)."""
        if context is not None:
            self._span.add_link(_span_context(context))
            self._span.set_attribute("expertd.linked", f"{context.trace_id}-{context.span_id}")

    def fail(self, name: str, message: str = "") -> None:
        """Record an error by its catalogue name (status ERROR, ``error.type``, an exception event)."""
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("error.type", name)
        self._span.add_event("exception", {"exception.type": name, "exception.message": message[:300]})
        self._span.set_status(Status(StatusCode.ERROR, name))

    def end(self, end_ns: int | None = None) -> None:
        """End the span (now, or at ``end_ns`` from ``time.time_ns()``)."""
        self._span.end(end_time=end_ns)


def _span_context(parent: TraceParent):
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                       trace_flags=TraceFlags(parent.flags & 1))


def span(name: str, parent: TraceParent | None, *, kind: str = "internal",
         attributes: dict | None = None, links: Iterable[TraceParent] = (),
         start_ns: int | None = None):
    """A span named ``name`` under ``parent`` (a new trace if ``None``), or ``NO_SPAN`` when off.

    Use it as a context manager (it ends, recording an exception by its class
    name) or call ``end()``. ``kind``: internal, server, client, producer, consumer.
    ``start_ns``: a start in the past (``time.time_ns()``), e.g. when a wait began.
    """
    if not _state["checked"]:
        enabled()
    tracer = _state["tracer"]
    if tracer is None:
        return NO_SPAN
    parent_based = _state["parent_based"]
    if parent is not None and parent_based and not parent.flags & 1:
        return NO_SPAN  # the root's decision: not sampled (its children see the parent's context)
    try:
        from opentelemetry import trace as otel
        from opentelemetry.context import Context

        context = otel.set_span_in_context(otel.NonRecordingSpan(_span_context(parent))) \
            if parent is not None else Context()
        # Under parent-based sampling an unsampled request is recorded nowhere: no link to it.
        links = [link for link in links if link is not None and (link.flags & 1 or not parent_based)]
        otel_links = [otel.Link(_span_context(link)) for link in links]
        clean = {k: v for k, v in (attributes or {}).items() if v is not None}
        # Also as attributes: some backends (Phoenix) keep neither the resource nor the links.
        clean["expertd.service"] = _state["service_name"]
        if links:
            clean["expertd.links"] = [f"{link.trace_id}-{link.span_id}"
                                      for link in links[:MAX_LINK_ATTRIBUTES]]
        otel_span = tracer.start_span(name, context=context, kind=getattr(otel.SpanKind, kind.upper()),
                                      attributes=clean, links=otel_links, start_time=start_ns)
        if not otel_span.is_recording():  # a root the sampler dropped
            ctx = otel_span.get_span_context()
            return _Unrecorded(TraceParent(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}",
                                           int(ctx.trace_flags)))
        return Span(otel_span)
    except Exception:  # noqa: BLE001 - tracing never fails a call
        _log().exception("could not start span %s", name)
        return NO_SPAN


def now_ns() -> int:
    """The wall clock in nanoseconds, as spans take it."""
    return time.time_ns()
