"""One expert's versions changed live on a real server with two workers, the bridge in front
and constant load (tests/constant_load.py): load 3 (a real model that disagrees now and then)
beside 2, a broken 4 refused with its reason while 2 and 3 serve, shadow 3 (answers stay
byte-identical; agreement read from each worker's /metrics), canary 10%, promote, roll back,
unload 2; no call fails meanwhile (docs/versions.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import msgpack
import pytest
import zerorpc

from tests.conftest import BIN, ROOT, ServerProcess, free_port, wait_for
from tests.e2e.test_chains_bridge import running_bridge
from tests.e2e.test_versions import experts_file, perturbed_version, versioned_models

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
    shutil.rmtree(tmp / "models" / "sentiment" / "3")
    perturbed_version(tmp, "3")
    (tmp / "models" / "sentiment" / "4").mkdir()
    (tmp / "models" / "sentiment" / "4" / "model.keras").write_text("not a model")
    metrics_port = free_port()
    server = ServerProcess(experts_file(tmp, "{stable: 2}"), tmp, "--workers", "2",
                           "--metrics-port", str(metrics_port))
    try:
        with running_bridge(server.endpoint) as url:
            load = subprocess.Popen([sys.executable, str(ROOT / "tests" / "constant_load.py"),
                                     server.endpoint, url, str(tmp / "load.json")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
            assert load.stdout.readline() == b"started\n"
            server.metrics_port, server.url = metrics_port, url
            yield server, load, tmp / "load.json"
            if load.poll() is None:
                load.stdin.close()
                load.wait(120)
    finally:
        server.stop()


def served(endpoint: str) -> dict:
    """Each worker's served_versions of sentiment."""
    return on_every_worker(endpoint, lambda c: c.health()["served_versions"]["sentiment"])


TEXTS = [f"{word} day number {i}" for i, word in enumerate(
    ["a lovely", "an awful", "an ordinary", "a great", "a sad", "a fine", "a dull", "a happy"] * 25)]


def answers_as_bytes(endpoint: str) -> dict:
    """Each worker's answer to the same unnamed calls, as the bytes a caller gets."""
    docs = [{"text": t} for t in TEXTS[:40]]
    return on_every_worker(endpoint, lambda c: (msgpack.packb(c.opinions_batch(docs, ["sentiment"])),
                                                msgpack.packb(c.opinion("sentiment", docs[0]))))


def over_http(url: str) -> bytes:
    """The bridge's answer to POST /opinions for the same documents, as bytes."""
    body = json.dumps({"doc": {"text": TEXTS[1]}, "experts": ["sentiment"]}).encode()
    request = urllib.request.Request(f"{url}/opinions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def scrape(port: int) -> str:
    """A worker's Prometheus /metrics, once ("" while nothing listens there yet).

    Worker i serves metrics on --metrics-port + i; when another process's outgoing
    connection holds that port as its local port, the worker takes the port once it
    is free (rpc_server/server.py serve_metrics), so a scrape may be refused a while.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return ""
        raise


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of a scrape (0 if absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            sample, value = line.rsplit(" ", 1)
            got = ",".join(sorted(sample[len(name) + 1:-1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


def test_versions_change_live_on_every_worker_and_no_call_fails(live):
    server, load, out = live
    endpoint = server.endpoint
    unshadowed, unshadowed_http = answers_as_bytes(endpoint), over_http(server.url)

    done = expert_cli(endpoint, "load", "sentiment", "3")
    assert done.returncode == 0, done.stderr
    assert "serving 2, 3; default 2" in done.stdout
    assert all(s["versions"] == ["2", "3"] and s["default"] == "2"
               for s in served(endpoint).values())

    broken = expert_cli(endpoint, "load", "sentiment", "4")
    assert broken.returncode == 2
    assert "VersionRefused: expert 'sentiment' version 4 failed to load: ValueError" in broken.stderr
    assert "still serving 2 (stable), 3" in broken.stderr
    answers = on_every_worker(endpoint, lambda c: (c.opinions(DOC, ["sentiment@2", "sentiment@3"])
                                                   ["versions"]))
    assert all(a == {"sentiment@2": "2", "sentiment@3": "3"} for a in answers.values())

    done = expert_cli(endpoint, "shadow", "sentiment", "3")
    assert done.returncode == 0 and "sentiment: shadow 3" in done.stdout, done.stderr
    assert answers_as_bytes(endpoint) == unshadowed and over_http(server.url) == unshadowed_http
    ports = [server.metrics_port, server.metrics_port + 1]
    labels = {"expert": "sentiment", "serving": "2", "shadow": "3"}
    wait_for(lambda: all(metric(scrape(p), "expertd_shadow_compared_total", field="label",
                                **labels) > 0 for p in ports),
             what="shadow comparisons on both workers")
    scrapes = [scrape(p) for p in ports]  # one scrape per worker: the counters agree within it
    compared = sum(metric(t, "expertd_shadow_compared_total", field="label", **labels) for t in scrapes)
    agreed = sum(metric(t, "expertd_shadow_agreed_total", field="label", **labels) for t in scrapes)
    valence = sum(metric(t, "expertd_shadow_abs_diff_total", field="valence", **labels)
                  for t in scrapes)
    # version 3 is a shifted model: its valences always differ, its labels now and then
    assert 0 < agreed <= compared and valence > 0
    assert metric(scrapes[0], "expertd_version_call_seconds_count", expert="sentiment",
                  version="2") > 0
    listed = on_every_worker(endpoint, lambda c: [e for e in c.experts() if e["name"] == "sentiment"][0])
    assert all(e["shadow"] == "3" and 0 < e["shadow_agreement"][0]["agreement"]["label"] <= 1
               and e["shadow_agreement"][0]["mean_abs_diff"]["valence"] > 0
               for e in listed.values())

    done = expert_cli(endpoint, "canary", "sentiment", "3", "0.1", "--sticky", "document")
    assert done.returncode == 0 and "canary 3 answers 10%" in done.stdout, done.stderr
    shares = on_every_worker(endpoint, lambda c: [d["versions"]["sentiment"] for d in
                                                  c.opinions_batch([{"text": t} for t in TEXTS],
                                                                   ["sentiment"])])
    first, second = shares.values()
    assert first == second  # sticky per document: the same text, the same version, any worker
    assert 5 <= first.count("3") <= 50 and set(first) == {"2", "3"}

    done = expert_cli(endpoint, "promote", "sentiment", "3")
    assert done.returncode == 0, done.stderr
    assert all(s["shadow"] is None and s["canary"] is None and s["default"] == "3"
               for s in served(endpoint).values())  # promoted: nothing left to shadow or canary
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
    assert all(s["versions"] == ["3"] and s["default"] == "3" for s in served(endpoint).values())
    with pytest.raises(zerorpc.RemoteError) as info:
        on_every_worker(endpoint, lambda c: c.opinion("sentiment@2", DOC))
    assert info.value.name == "UnknownExpert"

    load.stdin.close()
    assert load.wait(120) == 0
    counts = json.loads(out.read_text())
    assert counts["calls"] > 0 and counts["failed"] == 0, counts["failures"]
    assert "version 2 unloaded" in server.read_log()
