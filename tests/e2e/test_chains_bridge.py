"""Chains through the HTTP bridge: a real `node express_bridge/src/server.js` over a real expertd."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.test_chains import chain_server  # noqa: F401  (the module-scoped server fixture)

BRIDGE = ROOT / "express_bridge"


@contextlib.contextmanager
def running_bridge(endpoint: str):
    """A real bridge on a free port, talking to the expertd at ``endpoint``; its base URL."""
    node = shutil.which("node")
    if node is None or not (BRIDGE / "node_modules").is_dir():
        pytest.skip("needs node and express_bridge/node_modules (make setup)")
    port = free_port()
    env = dict(os.environ, EXPERTD_ENDPOINT=endpoint, PORT=str(port),
               HOST="127.0.0.1", LOG_LEVEL="warn",
               ADMIT_MAX_LAG_MS="0")  # a loaded test machine's lag must not shed these tests' calls
    env.pop("EXPERTD_HTTP_TOKEN", None)
    proc = subprocess.Popen([node, "src/server.js"], cwd=BRIDGE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"bridge did not start: {proc.stderr.read().decode()}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def bridge(chain_server):  # noqa: F811
    """The bridge on a free port, talking to the chain server; its base URL."""
    with running_bridge(chain_server.endpoint) as url:
        yield url


def post(url: str, body) -> tuple[int, dict]:
    """POST JSON; the status and the decoded JSON answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_get_experts_shows_needs(bridge):
    with urllib.request.urlopen(f"{bridge}/experts", timeout=30) as response:
        entries = {entry["name"]: entry for entry in json.loads(response.read())}
    assert entries["pair"]["needs"] == {"base": "left", "other": "right"}
    assert entries["base"]["needs"] == {}


def test_a_chained_expert_over_http(bridge):
    status, opinion = post(f"{bridge}/experts/pair", {"text": f"http {uuid.uuid4().hex}"})
    assert status == 200 and opinion["seen"] == 1
    assert set(opinion["got"]) == {"left", "right"}


def test_opinions_over_http_include_what_the_chain_built_on(bridge):
    status, doc = post(f"{bridge}/opinions",
                       {"doc": {"id": 5, "text": f"http {uuid.uuid4().hex}"}, "experts": ["twice"]})
    assert status == 200 and doc["id"] == 5
    assert list(doc["opinions"]) == ["base", "other", "pair", "twice"]
    assert all(opinion["seen"] == 1 for opinion in doc["opinions"].values())


def test_concurrent_http_requests_for_a_chain_are_each_answered(bridge):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"http {uuid.uuid4().hex}" for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:  # the bridge coalesces them into opinions_batch
        answers = list(pool.map(lambda t: post(f"{bridge}/experts/pair", {"text": t}), texts))
    assert all(status == 200 and opinion["seen"] == 1 for status, opinion in answers)


def test_a_failed_dependency_over_http_is_424_dependency_failed(bridge):
    status, body = post(f"{bridge}/experts/lonely", {"text": "x"})
    assert status == 424
    assert body["error"]["name"] == "DependencyFailed" and "'failing'" in body["error"]["message"]


def test_concurrent_dependency_failures_are_not_asked_again_one_by_one(bridge, chain_server):  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    import zerorpc

    client = zerorpc.Client(chain_server.endpoint, timeout=30)
    before = client.stats()["experts"]["failing"]["items"]
    with ThreadPoolExecutor(16) as pool:  # coalesced into opinions_batch calls
        answers = list(pool.map(lambda i: post(f"{bridge}/experts/lonely", {"text": f"x{i}"}),
                                range(16)))
    assert all(status == 424 and body["error"]["name"] == "DependencyFailed"
               for status, body in answers)
    # Each document's dependency ran once: the bridge took DependencyFailed as that
    # document's answer instead of asking each document again on its own.
    assert client.stats()["experts"]["failing"]["items"] == before + 16
    client.close()
