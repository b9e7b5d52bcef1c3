"""expertd.tracing: off unless OTEL_TRACES_EXPORTER names an exporter, and then no SDK import at all."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.console_spans import console_spans

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"

SCRIPT = f"""
import sys
from expertd import tracecontext, tracing
from expertd.clients import calls
from expertd.rpc_server import batching, service
parent = tracecontext.parse({PARENT!r})
with tracing.span("outer", parent, kind="server") as outer:
    with tracing.span("inner", outer.context, links=[parent]) as inner:
        inner.set(**{{"expertd.batch_size": 3}})
    try:
        with tracing.span("failing", outer.context):
            raise ValueError("boom")
    except ValueError:
        pass
tracing.flush()
print("IMPORTED" if any(m.startswith("opentelemetry") for m in sys.modules) else "NOT IMPORTED",
      file=sys.stderr)
"""


def _run(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})


def test_off_by_default_imports_no_opentelemetry():
    for env in ({}, {"OTEL_TRACES_EXPORTER": "none"},
                {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}):
        out = _run(**env)
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip() == "NOT IMPORTED", (env, out.stderr)
        assert out.stdout == ""


def test_on_with_the_console_exporter_spans_keep_parents_links_and_errors():
    out = _run(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="under-test")
    assert out.returncode == 0, out.stderr
    spans = console_spans(out.stdout)
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"outer", "inner", "failing"}
    assert all(span["context"]["trace_id"] == f"0x{TRACE}" for span in spans)
    assert by_name["outer"]["parent_id"] == "0x00f067aa0ba902b7"
    assert by_name["inner"]["parent_id"] == by_name["outer"]["context"]["span_id"]
    assert by_name["inner"]["attributes"]["expertd.batch_size"] == 3
    assert by_name["inner"]["links"][0]["context"]["span_id"] == "0x00f067aa0ba902b7"
    assert by_name["failing"]["status"]["status_code"] == "ERROR"
    assert by_name["failing"]["attributes"]["error.type"] == "ValueError"
    assert by_name["outer"]["resource"]["attributes"]["service.name"] == "under-test"
