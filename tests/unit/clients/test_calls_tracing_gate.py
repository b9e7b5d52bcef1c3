"""``clients.calls`` imports expertd's tracing only when a variable can turn it on."""

from __future__ import annotations

import subprocess
import sys

from expertd import tracecontext, tracing
from expertd.clients import calls


def test_without_the_gate_variables_tracing_is_off_and_no_trace_context_is_sent(monkeypatch):
    """What the gate skips is what tracing and tracecontext would do without those variables."""
    assert tracecontext.ENV_TRACEPARENT in calls.TRACE_VARIABLES
    for name in calls.TRACE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing._wanted_exporters() == []
    assert tracecontext.environment_traceparent() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert tracing._wanted_exporters() == ["console"]


def test_a_request_is_made_without_importing_tracing_unless_a_variable_asks():
    code = ("import sys\n"
            "from expertd.clients.calls import Calls\n"
            "class Recording(Calls):\n"
            "    endpoint, timeout, heartbeat = 'tcp://127.0.0.1:1', 5.0, 5.0\n"
            "    def __init__(self):\n"
            "        self._pending, self._replies, self.sent = set(), {}, []\n"
            "    def _send_payload(self, payload):\n"
            "        self.sent.append(payload)\n"
            "calls = Recording()\n"
            "calls.send('health')\n"
            "print(b'expertd_traceparent' in calls.sent[0], 'expertd.tracing' in sys.modules)\n")
    for env, expected in (({}, "False False"),
                          ({"TRACEPARENT": f"00-{'a' * 32}-{'b' * 16}-01"}, "True True")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=env)
        assert done.stdout.strip() == expected, done.stderr
