"""The HTTP bridge, property-based, against its own OpenAPI document (schemathesis).

A real ``expertd serve`` (tests/openapi_experts.yaml: no TensorFlow) and a
real bridge (``node express_bridge/src/server.js``); schemathesis reads
``GET /openapi.json`` and sends up to ``MAX_EXAMPLES`` generated requests per
operation (half valid, half not). Every response must be no 5xx, have a
documented status and content type, and match its schema; an NDJSON stream
must answer one line per line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ROOT, ServerProcess, free_port  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "openapi_experts.yaml"
MAX_EXAMPLES = 50
NODE = shutil.which("node")


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value):
    """The stream route's body is text (lines of JSON): send it as UTF-8."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()


def wait_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bridge exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def bridge_url(tmp_path_factory):
    """A real expertd and a real bridge in front of it; yields the bridge's URL."""
    if NODE is None or not (ROOT / "express_bridge" / "node_modules").is_dir():
        pytest.skip("needs node and express_bridge/node_modules (make setup)")
    tmp = tmp_path_factory.mktemp("openapi")
    server = ServerProcess(CONFIG, tmp)
    port = free_port()
    env = {**os.environ, "EXPERTD_ENDPOINT": server.endpoint, "PORT": str(port),
           "HOST": "127.0.0.1", "LOG_LEVEL": "warn", "BODY_LIMIT": "64kb",
           "ADMIT_MAX_LAG_MS": "0"}  # a loaded test machine's lag must not shed (a 503 fails the check)
    log = open(tmp / "bridge.log", "wb")
    bridge = subprocess.Popen([NODE, "src/server.js"], cwd=ROOT / "express_bridge", env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", bridge)
        yield url
    finally:
        bridge.terminate()
        try:
            bridge.wait(20)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait()
        log.close()
        assert server.stop() == 0, server.read_log()
        warnings = (tmp / "bridge.log").read_text(errors="replace")
        assert "unhandled error" not in warnings, warnings[-4000:]


def one_line_per_line(ctx, response, case):
    """An NDJSON stream answers each input line with one output line."""
    if not case.path.endswith("/stream") or response.status_code != 200:
        return None
    body = response.request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    lines_in = body.split(b"\n")
    if lines_in[-1] == b"":
        lines_in.pop()
    text = response.content.decode("utf-8", "replace")
    lines_out = text.split("\n")
    if lines_out[-1] == "":
        lines_out.pop()
    assert len(lines_out) == len(lines_in), (
        f"{len(lines_in)} lines in, {len(lines_out)} out: {body!r} -> {text[:500]!r}")
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def run_operation(operation, mode, base_url: str, failures: list) -> None:
    """Send up to MAX_EXAMPLES / 2 generated requests of one mode; record what fails."""

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES // 2, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    def check(case):
        case.call_and_validate(base_url=base_url, checks=CHECKS,
                               additional_checks=[one_line_per_line], timeout=30)

    try:
        check()
    except Unsatisfiable:
        pass  # nothing to make invalid: an operation without parameters or body
    except Exception as exc:  # noqa: BLE001 - every failure is reported together below
        failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")


def test_bridge_matches_its_openapi_document(bridge_url):
    """No 5xx, documented statuses and content types, every response matching its schema."""
    schema = schemathesis.openapi.from_url(f"{bridge_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/experts/vader", "/experts/shouting/batch", "/experts/failing/stream", "/opinions",
            "/stats", "/healthz"} <= paths, paths
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run_operation(operation, mode, bridge_url, failures)
    assert not failures, "\n\n".join(failures)


_LINE = st.one_of(
    st.just(""), st.just("   "), st.just("\r"), st.just("[1]"), st.just("null"),
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40),
    st.builds(lambda i, t: json.dumps({"id": i, "text": t}), st.integers(0, 10**6),
              st.text(max_size=60)),
    st.builds(lambda t: json.dumps({"text": t}), st.integers()),
)


@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(lines=st.lists(_LINE, max_size=30), final_newline=st.booleans())
def _stream_round_trip(bridge_url, lines, final_newline):
    body = "\n".join(lines) + ("\n" if final_newline and lines else "")
    response = requests.post(f"{bridge_url}/experts/vader/stream", data=body.encode("utf-8", "surrogatepass"),
                             headers={"Content-Type": "application/x-ndjson"}, timeout=30)
    assert response.status_code == 200, response.text
    sent = body.encode("utf-8", "surrogatepass").split(b"\n")
    if sent[-1] == b"":
        sent.pop()
    out = response.content.decode("utf-8").split("\n")
    assert out.pop() == ""
    assert len(out) == len(sent), (body, response.text)
    for number, (raw, answer) in enumerate(zip(sent, out), start=1):
        if raw.strip() == b"" or raw == b"\r":
            assert answer == ""
            continue
        got = json.loads(answer)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            assert got.get("id") == doc.get("id")
            assert "vader" in got.get("opinions", {}) or "vader" in got.get("errors", {})
        else:
            assert got["line"] == number and got["error"]["name"] == "InvalidDocument"


def test_stream_answers_every_line_in_order(bridge_url):
    """Property: any mix of documents, blank and bad lines comes back one for one, in order."""
    _stream_round_trip(bridge_url)
