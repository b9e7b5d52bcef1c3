"""A call whose caller did not sample its trace costs what tracing off costs, and keeps its trace id.

The sampling decision is made once, at the root (the bridge, or the server for a
call that comes without a traceparent), and followed: under a parent-based
sampler (the default), a call whose traceparent says "not sampled" (flags 00)
must not reach the OpenTelemetry SDK at all (no span started, no attributes or
link strings built), while its log line still carries its trace id. A real
service (a micro-batcher, a thread pool, the call's header read by the server's
middleware) in a child process with the SDK on (console exporter; new traces never sampled).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER = "1" * 32

SCRIPT = f"""
import json, logging, sys
import gevent
from gevent.threadpool import ThreadPool
from expertd import tracing
from expertd.experts.base import Expert
from expertd.rpc_server.batching import MicroBatcher
from expertd.rpc_server.call_trace import TraceMiddleware
from expertd.rpc_server.service import Experts
from expertd.rpc_server.stats import Stats
from expertd.spec import TRACE_HEADER, TRACE_LINKS_HEADER

class Length(Expert):
    def predict(self, inputs):
        return [{{"length": len(str(x))}} for x in inputs]

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
logging.getLogger("expertd.calls").addHandler(Keep())
logging.getLogger("expertd.calls").setLevel(logging.INFO)

assert tracing.enabled()
tracer, started = tracing._state["tracer"], []
start_span = tracer.start_span
def counted(name, *args, **kwargs):
    started.append(name)
    return start_span(name, *args, **kwargs)
tracer.start_span = counted

expert = Length("length")
service = Experts({{"length": expert}}, {{"length": MicroBatcher(expert, ThreadPool(1))}},
                  Stats(["length"]), 1000)

def call(flags, method, *args):
    header = {{}} if flags is None else {{
        TRACE_HEADER: f"00-{TRACE}-00f067aa0ba902b7-{{flags}}",
        TRACE_LINKS_HEADER: [f"00-{TRACE}-00f067aa0ba902b8-{{flags}}",
                             f"00-{OTHER}-00f067aa0ba902b9-{{flags}}"]}}
    def run():
        TraceMiddleware().load_task_context(header)
        return getattr(service, method)(*args)
    del started[:]
    result = gevent.spawn(run).get(timeout=30)
    return {{"result": result, "started": list(started), "log": lines[-1]}}

out = {{"unsampled": call("00", "opinion", "length", {{"text": "hello"}}),
        "unsampled_batch": call("00", "opinions_batch", [{{"text": "a"}}, {{"text": "bb"}}], ["length"]),
        "root": call(None, "opinion", "length", {{"text": "hello"}}),
        "sampled": call("01", "opinion", "length", {{"text": "hello"}})}}
print("RESULT " + json.dumps(out))
"""


def _run() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_TRACES_SAMPLER="parentbased_traceidratio",
               OTEL_TRACES_SAMPLER_ARG="0")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_an_unsampled_call_starts_no_span_and_logs_its_trace_id():
    out = _run()
    unsampled, batch, sampled = out["unsampled"], out["unsampled_batch"], out["sampled"]
    assert unsampled["result"] == {"length": 5}
    assert unsampled["started"] == [], "an unsampled call reached the OpenTelemetry SDK"
    assert unsampled["log"].endswith(f"outcome=ok trace={TRACE} links={TRACE},{OTHER}")
    assert batch["started"] == [] and [d["opinions"]["length"] for d in batch["result"]] == \
        [{"length": 1}, {"length": 2}]
    assert f"trace={TRACE}" in batch["log"]
    # A call without a traceparent: the server is the root, the sampler decides once (here: never).
    assert out["root"]["started"] == ["expertd opinion"]
    assert re.search(r"outcome=ok trace=[0-9a-f]{32}$", out["root"]["log"])
    # The same call, sampled: every span of the call is started (what the cut must keep).
    assert sampled["started"] == ["expertd opinion", "expert length", "queue wait length", "model length",
                                  "output checks length"]
    assert sampled["log"].endswith(f"trace={TRACE} links={TRACE},{OTHER}")
