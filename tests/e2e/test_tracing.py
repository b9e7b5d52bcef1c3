"""Tracing end to end against real processes: one id per call from the caller to the server's log.

``TRACEPARENT`` (OpenTelemetry's environment propagation for command-line
tools) puts the pipe stage's and ``ExpertsClient``'s calls in the caller's
trace: the server's log line for each call carries its trace id.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import zerorpc

from expertd.clients import ExpertsClient
from tests.conftest import BIN, ROOT, ServerProcess

EXPERTD = str(BIN / "expertd")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def vader_server(tmp_path_factory):
    """A server of the VADER expert only (no TensorFlow: starts in seconds)."""
    proc = ServerProcess(ROOT / "tests" / "vader_experts.yaml", tmp_path_factory.mktemp("trace"))
    yield proc
    assert proc.stop() == 0, proc.read_log()


def _env(server, **more) -> dict:
    env = dict(os.environ, EXPERTD_ENDPOINT=server.endpoint, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("TRACEPARENT", None)
    env.update(more)
    return env


def _call_lines(server) -> list[str]:
    return [line for line in server.read_log().splitlines() if " call " in line]


def test_the_pipe_stage_puts_its_calls_under_traceparent(vader_server):
    docs = b"".join(json.dumps({"text": f"good {i}"}).encode() + b"\n" for i in range(3))
    out = subprocess.run([EXPERTD, "pipe", "vader"], input=docs, capture_output=True, timeout=60,
                         env=_env(vader_server, TRACEPARENT=PARENT))
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3
    mine = [line for line in _call_lines(vader_server) if f"trace={TRACE}" in line]
    assert mine, _call_lines(vader_server)


def test_experts_client_takes_its_parent_from_the_environment(vader_server, monkeypatch):
    monkeypatch.setenv("TRACEPARENT", f"00-{'a' * 32}-00f067aa0ba902b7-01")
    with ExpertsClient(vader_server.endpoint) as experts:
        assert experts.vader({"text": "lovely"})["label"] == "positive"
    assert any("call opinion expert=vader" in line and f"trace={'a' * 32}" in line
               for line in _call_lines(vader_server))


def test_a_stock_client_call_gets_a_trace_id_of_its_own(vader_server):
    client = zerorpc.Client(vader_server.endpoint, timeout=30)
    try:
        client.health()
    finally:
        client.close()
    line = [line for line in _call_lines(vader_server) if "call health" in line][-1]
    trace_id = line.rsplit("trace=", 1)[1].split()[0]
    assert len(trace_id) == 32 and trace_id != TRACE
