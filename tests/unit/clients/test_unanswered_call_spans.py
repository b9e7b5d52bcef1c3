"""A client span (pipe stage, tracing on) ends with the error when its call ends unanswered.

A call whose wait a signal interrupted (``WaitInterrupted``; the call stays
pending, so its span ends when the connection closes) or whose connection was
lost (``ServerUnavailable``) must still end its span, with the error recorded:
a span never ended is never exported. A real ZMTP connection (the pipe stage's
``wire.Connection``) to a real ZeroMQ ROUTER that reads the call and never
answers, in a child process with the SDK on (console exporter).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.console_spans import console_spans

SCRIPT = """
import sys
import zmq
from expertd import tracing
from expertd.clients import wire
from expertd.clients.calls import ServerUnavailable, WaitInterrupted

context = zmq.Context()
router = context.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
port = router.bind_to_random_port("tcp://127.0.0.1")

interrupted = wire.connect(f"tcp://127.0.0.1:{port}", timeout=20)
message_id = interrupted.send("health")
router.recv_multipart()  # it arrived; it is never answered
interrupted.stop_waiting = lambda: True  # a signal came
try:
    interrupted.receive(message_id)
except WaitInterrupted:
    print("interrupted", file=sys.stderr)
interrupted.close()

lost = wire.connect(f"tcp://127.0.0.1:{port}", timeout=20)
message_id = lost.send("stats")
router.recv_multipart()
router.close()  # the server goes away
try:
    lost.receive(message_id)
except ServerUnavailable:
    print("unavailable", file=sys.stderr)
lost.close()
tracing.flush()
"""


def test_unanswered_calls_end_their_spans_with_the_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEPARENT"))}
    env["OTEL_TRACES_EXPORTER"] = "console"
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.split() == ["interrupted", "unavailable"], out.stderr
    spans = console_spans(out.stdout)
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"expertd health", "expertd stats"}, out.stdout
    assert by_name["expertd health"]["attributes"]["error.type"] == "WaitInterrupted"
    assert by_name["expertd stats"]["attributes"]["error.type"] == "ServerUnavailable"
    assert all(span["status"]["status_code"] == "ERROR" for span in spans)
