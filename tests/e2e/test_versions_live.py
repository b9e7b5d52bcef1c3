"""One expert's versions changed live on a real server with two workers, the bridge in front
and constant load (tests/constant_load.py): load 3 beside 2, a broken 4 refused with its
reason, promote, roll back, unload 2; no call fails meanwhile (docs/versions.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import zerorpc

from tests.conftest import BIN, ROOT, ServerProcess
from tests.e2e.test_chains_bridge import running_bridge
from tests.e2e.test_versions import experts_file, versioned_models

DOC = {"text": "I love this, it is wonderful"}


def expert_cli(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    """``expertd expert ARGS`` against ``endpoint``."""
    return subprocess.run([str(BIN / "expertd"), "expert", *args, "--endpoint", endpoint],
                          capture_output=True, text=True, timeout=300)


def on_every_worker(endpoint: str, ask, workers: int = 2, tries: int = 40) -> dict:
    """``ask(client)`` on fresh connections until every worker answered: instance -> answer."""
    answers = {}
    for _ in range(tries):
        client = zerorpc.Client(endpoint, timeout=30)
        try:
            answers[client.health()["instance"]] = ask(client)
        finally:
            client.close()
        if len(answers) == workers:
            return answers
    raise AssertionError(f"only {len(answers)} of {workers} workers answered")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Two workers serving sentiment 2 (folders 2, 3 and a broken 4), the bridge, the load."""
    tmp = tmp_path_factory.mktemp("versions-live")
    versioned_models(tmp)
    (tmp / "models" / "sentiment" / "4").mkdir()
    (tmp / "models" / "sentiment" / "4" / "model.keras").write_text("not a model")
    server = ServerProcess(experts_file(tmp, "{stable: 2}"), tmp, "--workers", "2")
    try:
        with running_bridge(server.endpoint) as url:
            load = subprocess.Popen([sys.executable, str(ROOT / "tests" / "constant_load.py"),
                                     server.endpoint, url, str(tmp / "load.json")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
            assert load.stdout.readline() == b"started\n"
            yield server, load, tmp / "load.json"
            if load.poll() is None:
                load.stdin.close()
                load.wait(120)
    finally:
        server.stop()


def served(endpoint: str) -> dict:
    """Each worker's served_versions of sentiment."""
    return on_every_worker(endpoint, lambda c: c.health()["served_versions"]["sentiment"])


def test_versions_change_live_on_every_worker_and_no_call_fails(live):
    server, load, out = live
    endpoint = server.endpoint

    done = expert_cli(endpoint, "load", "sentiment", "3")
    assert done.returncode == 0, done.stderr
    assert "serving 2, 3; default 2" in done.stdout
    assert all(s == {"versions": ["2", "3"], "default": "2"} for s in served(endpoint).values())

    broken = expert_cli(endpoint, "load", "sentiment", "4")
    assert broken.returncode == 2
    assert "VersionRefused: expert 'sentiment' version 4 failed to load: ValueError" in broken.stderr
    assert "still serving 2 (stable), 3" in broken.stderr
    answers = on_every_worker(endpoint, lambda c: (c.opinions(DOC, ["sentiment@2", "sentiment@3"])
                                                   ["versions"]))
    assert all(a == {"sentiment@2": "2", "sentiment@3": "3"} for a in answers.values())

    done = expert_cli(endpoint, "promote", "sentiment", "3")
    assert done.returncode == 0, done.stderr
    answers = on_every_worker(endpoint, lambda c: c.opinions(DOC, ["sentiment"])["versions"])
    assert all(a == {"sentiment": "3"} for a in answers.values())

    done = expert_cli(endpoint, "rollback", "sentiment")
    assert done.returncode == 0 and "rolled sentiment back to version 2" in done.stdout
    assert all(s["default"] == "2" for s in served(endpoint).values())

    refused = expert_cli(endpoint, "unload", "sentiment", "2")
    assert refused.returncode == 2 and "version 2 is the default" in refused.stderr

    assert expert_cli(endpoint, "promote", "sentiment", "3").returncode == 0
    done = expert_cli(endpoint, "unload", "sentiment", "2")
    assert done.returncode == 0, done.stderr
    assert all(s == {"versions": ["3"], "default": "3"} for s in served(endpoint).values())
    with pytest.raises(zerorpc.RemoteError) as info:
        on_every_worker(endpoint, lambda c: c.opinion("sentiment@2", DOC))
    assert info.value.name == "UnknownExpert"

    load.stdin.close()
    assert load.wait(120) == 0
    counts = json.loads(out.read_text())
    assert counts["calls"] > 0 and counts["failed"] == 0, counts["failures"]
    assert "version 2 unloaded" in server.read_log()
