"""The trace context a request's header gives a call (expertd.rpc_server.call_trace)."""

from __future__ import annotations

from expertd.rpc_server.call_trace import read_header
from expertd.spec import TRACE_HEADER, TRACE_LINKS_HEADER

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_the_callers_traceparent_gives_the_trace_id():
    trace = read_header({"message_id": "x", TRACE_HEADER: PARENT})
    assert trace.trace_id == TRACE and trace.parent.span_id == "00f067aa0ba902b7"
    assert trace.log_field() == f" trace={TRACE}"


def test_a_call_without_one_starts_a_trace():
    for header in ({"message_id": "x"}, {TRACE_HEADER: "bogus"}, {TRACE_HEADER: 12}, None):
        trace = read_header(header)
        assert trace.parent is None and len(trace.trace_id) == 32


def test_a_coalesced_call_lists_its_requests_and_ignores_junk():
    other = "1" * 32
    links = [PARENT, f"00-{other}-00f067aa0ba902b7-01", "junk", 5, PARENT]
    trace = read_header({TRACE_HEADER: PARENT, TRACE_LINKS_HEADER: links})
    assert [link.trace_id for link in trace.links] == [TRACE, other, TRACE]
    assert trace.log_field() == f" trace={TRACE} links={TRACE},{other}"
    assert read_header({TRACE_LINKS_HEADER: "not a list"}).links == ()
