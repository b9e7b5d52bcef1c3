"""The server's bounded ring of recent traces (expertd.rpc_server.recent_traces)."""

from __future__ import annotations

from types import SimpleNamespace

from expertd.rpc_server.recent_traces import TraceRing


def _span(trace: int, span: int, name: str = "model vader", parent: int | None = None):
    context = SimpleNamespace(trace_id=trace, span_id=span)
    return SimpleNamespace(name=name, get_span_context=lambda: context,
                           parent=SimpleNamespace(span_id=parent) if parent else None,
                           start_time=1_000_000, end_time=3_500_000,
                           attributes={"expertd.batch_size": 4, "expertd.links": ("a-b",),
                                       "expertd.service": "expertd", "secret.stuff": "x"})


def test_spans_are_kept_by_trace_with_what_the_view_shows():
    ring = TraceRing()
    ring.add(_span(1, 2, parent=3))
    ring.add(_span(1, 4, name="expertd traces"))  # the view's own questions are not kept
    spans = ring.spans([f"{1:032x}", "unknown", 7])
    assert list(spans) == [f"{1:032x}"]
    (span,) = spans[f"{1:032x}"]
    assert span["parent_id"] == f"{3:016x}" and span["duration_ms"] == 2.5
    assert span["attributes"] == {"expertd.batch_size": 4, "expertd.links": ["a-b"]}


def test_the_ring_is_bounded():
    ring = TraceRing(max_traces=3, max_spans=2)
    for trace in range(1, 6):
        for span in range(1, 5):
            ring.add(_span(trace, span))
    kept = ring.spans([f"{t:032x}" for t in range(1, 6)])
    assert sorted(kept) == [f"{t:032x}" for t in (3, 4, 5)]
    assert all(len(spans) == 2 for spans in kept.values())
