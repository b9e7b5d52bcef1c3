"""A bounded in-memory ring of the spans of recent calls, for the bridge page's call view.

When tracing is on (``expertd.tracing``), every span the server ends is also
kept here, grouped by trace, at most ``MAX_TRACES`` traces (the oldest go
first) of at most ``MAX_SPANS`` spans each: a few hundred KiB at most, no
backend needed. The ``traces(trace_ids)`` RPC method answers the spans this
server holds for those traces; the bridge merges them with its own.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_TRACES = 256
MAX_SPANS = 200
#: Attributes worth showing in the call view (the rest stays in the trace backend).
SHOWN = ("expertd.expert", "expertd.batch_size", "expertd.requests", "expertd.needs", "expertd.failed",
         "expertd.inputs", "expertd.documents", "expertd.links", "expertd.linked", "error.type",
         "rpc.method", "expertd.refused", "expertd.examples", "expertd.applied")
#: Spans of the view's own questions are not kept.
IGNORED = frozenset({"expertd traces"})


class TraceRing:
    """Spans of the last ``max_traces`` traces, by trace id (hex)."""

    def __init__(self, max_traces: int = MAX_TRACES, max_spans: int = MAX_SPANS) -> None:
        """An empty ring."""
        self.max_traces = max_traces
        self.max_spans = max_spans
        self._traces: OrderedDict[str, list[dict]] = OrderedDict()

    def add(self, span) -> None:
        """Keep an ended OpenTelemetry span (``ReadableSpan``)."""
        if span.name in IGNORED:
            return
        context = span.get_span_context()
        trace_id = f"{context.trace_id:032x}"
        spans = self._traces.get(trace_id)
        if spans is None:
            spans = self._traces[trace_id] = []
            while len(self._traces) > self.max_traces:
                self._traces.popitem(last=False)
        if len(spans) >= self.max_spans:
            return
        attributes = span.attributes or {}
        spans.append({
            "name": span.name,
            "span_id": f"{context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "service": attributes.get("expertd.service", "expertd"),
            "start_ms": span.start_time / 1e6,
            "duration_ms": (span.end_time - span.start_time) / 1e6,
            "error": attributes.get("error.type"),
            "attributes": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in attributes.items() if k in SHOWN},
        })

    def spans(self, trace_ids: list[str]) -> dict[str, list[dict]]:
        """The spans held for each of ``trace_ids`` (those it holds)."""
        return {t: list(self._traces[t]) for t in trace_ids if isinstance(t, str) and t in self._traces}


#: The server process's ring, fed by ``expertd.tracing`` once ``start()`` ran.
RING = TraceRing()


def start() -> None:
    """Feed ``RING`` with every span this process ends (only when tracing is on)."""
    from expertd import tracing

    if tracing.enabled():
        tracing.add_listener(RING)
