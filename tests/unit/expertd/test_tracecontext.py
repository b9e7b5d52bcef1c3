"""W3C traceparent parsing and the TRACEPARENT environment variable (expertd.tracecontext)."""

from __future__ import annotations

from expertd import tracecontext
from expertd.tracecontext import TraceParent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_read():
    assert tracecontext.parse(PARENT) == TraceParent(TRACE, "00f067aa0ba902b7", 1)
    assert tracecontext.parse(PARENT).header() == PARENT
    assert tracecontext.parse(f"01-{TRACE}-00f067aa0ba902b7-00-future").sampled is False


def test_invalid_traceparents_are_refused():
    for bad in (None, 7, "", "garbage", f"ff-{TRACE}-00f067aa0ba902b7-01",
                f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{TRACE}-{'0' * 16}-01",
                f"00-{TRACE.upper()}-00f067aa0ba902b7-01", f"00-{TRACE}-00f067aa0ba902b7-01-x",
                PARENT + "x" * 600):
        assert tracecontext.parse(bad) is None, bad


def test_the_environment_gives_the_parent(monkeypatch):
    monkeypatch.setenv("TRACEPARENT", PARENT)
    assert tracecontext.environment_traceparent() == PARENT
    assert tracecontext.from_environment().trace_id == TRACE
    monkeypatch.setenv("TRACEPARENT", "not one")
    assert tracecontext.environment_traceparent() is None
    monkeypatch.delenv("TRACEPARENT")
    assert tracecontext.environment_traceparent() is None


def test_a_child_keeps_the_trace_and_its_sampling():
    parent = tracecontext.parse(PARENT)
    child = tracecontext.child_of(parent)
    assert child.trace_id == TRACE and child.span_id != parent.span_id and child.sampled
    assert len(tracecontext.child_of(None).trace_id) == 32
