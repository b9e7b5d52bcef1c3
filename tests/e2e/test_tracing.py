"""Tracing end to end against real processes: one id per call, spans in a real trace backend.

``TRACEPARENT`` (OpenTelemetry's environment propagation for command-line
tools) puts the pipe stage's and ``ExpertsClient``'s calls in the caller's
trace: the server's log line for each call carries its trace id. With the
standard ``OTEL_*`` variables set, the bridge, the server (a two-level chain:
consensus needs sentiment and vader) and the pipe stage send spans to Arize
Phoenix (its own venv, ``.venv-phoenix``, made by ``make``), whose query API
then shows one trace per request, with the right parents and the shared model
call linked to each request it served.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import zerorpc

from expertd.clients import ExpertsClient
from tests.conftest import BIN, ROOT, ServerProcess, free_port, wait_for

PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"
NODE = shutil.which("node")

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


# -- spans in a real trace backend (Arize Phoenix) ------------------------------------------


def _get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """Phoenix's server on a free loopback port (OTLP/HTTP and its REST API on the same port)."""
    assert PHOENIX.exists(), "Phoenix is not installed: make .venv-phoenix/.installed (see the Makefile)"
    work = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))},
           "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(free_port()),
           "PHOENIX_WORKING_DIR": str(work), "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = open(work / "phoenix.log", "wb")
    began = time.monotonic()
    process = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (work / "phoenix.log").read_text(errors="replace")[-3000:]
        try:
            return urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=240, what="Phoenix to answer /healthz")
        print(f"Phoenix answered after {time.monotonic() - began:.1f} s")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _otel_env(phoenix: str, service: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=phoenix,
               OTEL_BSP_SCHEDULE_DELAY="200")
    if service:
        env["OTEL_SERVICE_NAME"] = service
    return env


@pytest.fixture(scope="module")
def traced(phoenix, tmp_path_factory):
    """A traced server of a two-level chain and a traced bridge in front of it."""
    tmp = tmp_path_factory.mktemp("traced")
    saved = dict(os.environ)
    os.environ.update(_otel_env(phoenix))  # ServerProcess passes its environment on
    try:
        server = ServerProcess(ROOT / "tests" / "tracing_experts.yaml", tmp)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    bridge_port = free_port()
    bridge_log = open(tmp / "bridge.log", "wb")
    bridge = subprocess.Popen([NODE, "src/server.js"], cwd=ROOT / "express_bridge", stdout=bridge_log,
                              stderr=subprocess.STDOUT,
                              env={**_otel_env(phoenix), "EXPERTD_ENDPOINT": server.endpoint,
                                   "HOST": "127.0.0.1", "PORT": str(bridge_port),
                                   "ADMIT_MAX_LAG_MS": "0"})  # a shared CI machine lags: no shedding
    base = f"http://127.0.0.1:{bridge_port}"

    def bridge_up() -> bool:
        assert bridge.poll() is None, (tmp / "bridge.log").read_text(errors="replace")
        try:
            return _get_json(f"{base}/healthz", 2)["status"] == "ok"
        except OSError:
            return False

    try:
        wait_for(bridge_up, timeout=60, what="the bridge")
        yield {"server": server, "bridge": base, "phoenix": phoenix, "bridge_log": tmp / "bridge.log"}
    finally:
        bridge.send_signal(signal.SIGTERM)  # it exports its last spans before it exits
        try:
            bridge.wait(20)
        except subprocess.TimeoutExpired:
            bridge.kill()
        bridge_log.close()
        assert server.stop() == 0, server.read_log()


def _post(url: str, doc: dict, traceparent: str):
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST", headers={
        "content-type": "application/json", "traceparent": traceparent})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def _spans(phoenix: str, trace_id: str, want) -> list[dict]:
    """The spans Phoenix holds for ``trace_id``, once ``want(spans)`` is true (they arrive in batches)."""
    found: list[dict] = []

    def arrived() -> bool:
        nonlocal found
        found = _get_json(f"{phoenix}/v1/projects/default/spans?trace_id={trace_id}&limit=1000")["data"]
        return want(found)

    try:
        wait_for(arrived, timeout=60, what=f"the spans of trace {trace_id}")
    except Exception:
        seen = sorted((s["name"], s["attributes"].get("expertd.service")) for s in found)
        raise AssertionError(f"spans of {trace_id} in Phoenix: {seen}") from None
    return found


def _names(spans: list[dict]) -> set[str]:
    return {span["name"] for span in spans}


def test_a_chained_request_is_one_trace_across_the_bridge_and_the_server(traced):
    trace_id = "7ace" + "1" * 28
    caller = "00f067aa0ba902b7"
    status, headers, body = _post(f"{traced['bridge']}/experts/consensus", {"text": "What a lovely day"},
                                  f"00-{trace_id}-{caller}-01")
    assert status == 200, body
    assert body["label"] in ("positive", "neutral", "negative")
    assert headers["traceresponse"].split("-")[1] == trace_id
    assert any("call opinion expert=consensus" in line and f"trace={trace_id}" in line
               for line in traced["server"].read_log().splitlines())
    expected = {"POST /experts/:name", "admission", "coalescer wait", "rpc opinion", "expertd opinion",
                "expert sentiment", "expert vader", "expert consensus", "queue wait sentiment",
                "queue wait vader", "queue wait consensus", "model sentiment", "model vader",
                "model consensus", "output checks sentiment"}
    spans = _spans(traced["phoenix"], trace_id, lambda found: expected <= _names(found))
    by_name = {span["name"]: span for span in spans}
    assert {span["context"]["trace_id"] for span in spans} == {trace_id}
    assert {span["attributes"]["expertd.service"] for span in spans} == {"expertd-bridge", "expertd"}

    def parent(name: str) -> str:
        return by_name[name]["parent_id"]

    span_id = {name: span["context"]["span_id"] for name, span in by_name.items()}
    assert parent("POST /experts/:name") == caller  # under the caller's span
    assert headers["traceresponse"].split("-")[2] == span_id["POST /experts/:name"]
    for child, of in [("admission", "POST /experts/:name"), ("rpc opinion", "POST /experts/:name"),
                      ("expertd opinion", "rpc opinion"), ("expert consensus", "expertd opinion"),
                      ("expert sentiment", "expertd opinion"), ("expert vader", "expertd opinion"),
                      ("queue wait sentiment", "expert sentiment"), ("model sentiment", "expert sentiment"),
                      ("output checks sentiment", "model sentiment"),
                      ("queue wait consensus", "expert consensus")]:
        assert parent(child) == span_id[of], f"{child} should be under {of}"
    assert by_name["expert consensus"]["attributes"]["expertd.needs"] == "sentiment,vader"
    assert by_name["model sentiment"]["attributes"]["expertd.batch_size"] >= 1
    # Which version answered (several may serve one name: versions, canaries, shadows).
    for name in ("model sentiment", "queue wait sentiment"):
        assert by_name[name]["attributes"]["expertd.version"], by_name[name]["attributes"]
    assert by_name["POST /experts/:name"]["attributes"]["http.response.status_code"] == 200


def test_the_coalesced_model_call_is_linked_to_every_request_it_served(traced):
    ids = [f"c0a1{i:028x}" for i in range(1, 25)]
    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(lambda t: _post(f"{traced['bridge']}/experts/sentiment", {"text": "so good"},
                                                f"00-{t}-00f067aa0ba902b7-01"), ids))
    assert all(status == 200 for status, _, _ in answers)
    # Each request's trace holds the bridge's spans and, when it was sent alone or first
    # in a batch, the server's; the model call that served a coalesced batch links to each.
    linked: set[str] = set()
    batched = 0
    for trace_id in ids:
        spans = _spans(traced["phoenix"], trace_id,
                       lambda found: {"POST /experts/:name", "coalescer wait"} <= _names(found))
        waits = [s for s in spans if s["name"] == "coalescer wait"]
        assert waits[0]["attributes"]["expertd.batch_size"] >= 1
        batched = max(batched, waits[0]["attributes"]["expertd.batch_size"])
        for span in spans:
            if span["name"] == "model sentiment":
                linked.update(link.split("-")[0] for link in span["attributes"].get("expertd.links", []))
    assert batched > 1, "no request was coalesced"
    # Every request's trace id is among the links of the model calls that served them.
    query = "/v1/projects/default/spans?name=model%20sentiment&limit=1000"
    models = _get_json(traced["phoenix"] + query)["data"]
    for span in models:
        linked.update(link.split("-")[0] for link in span["attributes"].get("expertd.links", []))
    assert set(ids) <= linked, set(ids) - linked


def test_the_pipe_stage_lands_under_traceparent_in_the_backend(traced):
    trace_id = "919e" + "2" * 28
    parent = "00f067aa0ba902b7"
    env = {**_otel_env(traced["phoenix"]), "EXPERTD_ENDPOINT": traced["server"].endpoint,
           "TRACEPARENT": f"00-{trace_id}-{parent}-01"}
    docs = b"".join(json.dumps({"text": f"fine {i}"}).encode() + b"\n" for i in range(5))
    out = subprocess.run([EXPERTD, "pipe", "sentiment"], input=docs, capture_output=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    def arrived(found: list[dict]) -> bool:
        return any(s["attributes"].get("expertd.service") == "expertd-client" for s in found) and \
            any(s["name"] == "model sentiment" for s in found)

    spans = _spans(traced["phoenix"], trace_id, arrived)
    clients = [s for s in spans if s["attributes"]["expertd.service"] == "expertd-client"]
    assert all(s["parent_id"] == parent for s in clients)
    client_ids = {s["context"]["span_id"] for s in clients}
    servers = [s for s in spans if s["name"].startswith("expertd ") and s not in clients]
    assert servers and all(s["parent_id"] in client_ids for s in servers)


def test_the_server_log_lines_about_a_call_carry_its_trace_id(traced, monkeypatch):
    trace_id = "1095" + "3" * 28
    monkeypatch.setenv("TRACEPARENT", f"00-{trace_id}-00f067aa0ba902b7-01")
    with ExpertsClient(traced["server"].endpoint) as experts:
        # consensus reuses the vader opinion a document carries, unless it fails vader's check
        doc = experts.opinions({"text": "nice", "opinions": {"vader": {"forged": True}}}, ["consensus"])
    assert "consensus" in doc["opinions"] and "vader" in doc["recomputed"]
    lines = traced["server"].read_log().splitlines()
    assert any("were recomputed" in line and f"trace={trace_id}" in line for line in lines), lines[-5:]
    assert any("call opinions experts=consensus" in line and f"trace={trace_id}" in line for line in lines)
