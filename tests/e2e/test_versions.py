"""Versions of an expert against real processes: a real ``expertd serve`` with two copies of
the sentiment model as versions 2 and 3 (labels stable and canary), the pipe stage and the
HTTP bridge in front of it (docs/versions.md). The repository's models/ is only read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import urllib.request

import pytest
import zerorpc

from tests.conftest import BIN, ROOT, ServerProcess, wait_for
from tests.e2e.test_chains_bridge import post, running_bridge

MODELS = ROOT / "models"


def versioned_models(tmp) -> None:
    """``tmp/models``: sentiment as versions 2 and 3 (copies), and consensus' metrics."""
    if not (MODELS / "sentiment" / "model.keras").exists():
        pytest.skip("needs the trained models (make models)")
    for version in ("2", "3"):
        shutil.copytree(MODELS / "sentiment", tmp / "models" / "sentiment" / version)
    shutil.copytree(MODELS / "consensus", tmp / "models" / "consensus")


PERTURB = """
import sys
import keras
model = keras.saving.load_model(sys.argv[1], compile=False)
for layer, shift in (("valence", [0.7]), ("label", [0.0, 0.8, 0.0])):
    kernel, bias = model.get_layer(layer).get_weights()
    model.get_layer(layer).set_weights([kernel, bias + shift])
model.save(sys.argv[2])
"""


def perturbed_version(tmp, version: str) -> None:
    """``tmp/models/sentiment/VERSION``: the sentiment model with its output biases shifted (a
    real model that disagrees now and then: more neutral labels, higher valences)."""
    folder = tmp / "models" / "sentiment" / version
    shutil.copytree(MODELS / "sentiment", folder)
    (folder / "model.keras").unlink()
    subprocess.run([str(BIN / "python"), "-c", PERTURB, str(MODELS / "sentiment" / "model.keras"),
                    str(folder / "model.keras")], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def experts_file(tmp, versions: str = "{stable: 2, canary: 3}") -> object:
    """An experts file serving the versioned sentiment, vader and consensus (a chain on both)."""
    path = tmp / "experts.yaml"
    path.write_text(textwrap.dedent(f"""\
        experts:
          sentiment:
            expert: expertd.experts.keras_text:SentimentExpert
            options: {{model_dir: models/sentiment}}
            versions: {versions}
          vader:
            expert: expertd.experts.vader:VaderExpert
          consensus:
            expert: expertd.experts.consensus:ConsensusExpert
            needs: {{sentiment: sentiment, vader: rules}}
            options: {{models_dir: models}}
        """))
    return path


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    """A real server over the versioned experts file."""
    tmp = tmp_path_factory.mktemp("versions")
    versioned_models(tmp)
    proc = ServerProcess(experts_file(tmp), tmp)
    yield proc
    proc.stop()


@pytest.fixture()
def rpc(versioned):
    client = zerorpc.Client(versioned.endpoint, timeout=30)
    yield client
    client.close()


DOC = {"id": 7, "text": "I love this, it is wonderful"}


def test_experts_lists_the_served_versions(rpc):
    entries = {entry["name"]: entry for entry in rpc.experts()}
    assert entries["sentiment"]["version"] == "2"
    assert [(v["version"], v["labels"], v["default"]) for v in entries["sentiment"]["versions"]] == \
        [("2", ["stable"], True), ("3", ["canary"], False)]
    assert "versions" not in entries["vader"]
    assert rpc.health()["versions"]["sentiment"] == "2"


def test_an_unnamed_call_gets_the_default_and_the_document_records_it(rpc):
    doc = rpc.opinions(DOC, ["sentiment"])
    assert doc["versions"] == {"sentiment": "2"} and doc["opinions"]["sentiment"]["label"]


def test_a_call_may_name_a_version_or_a_label(rpc):
    doc = rpc.opinions(DOC, ["sentiment@canary", "sentiment@2"], {"only_opinions": True})
    assert set(doc["opinions"]) == {"sentiment@canary", "sentiment@2"}
    assert doc["versions"] == {"sentiment@canary": "3", "sentiment@2": "2"}
    assert rpc.opinion("sentiment@3", DOC) == rpc.opinion("sentiment", DOC)  # the same model copied
    assert len(rpc.batch("sentiment@canary", [DOC, DOC])) == 2


@pytest.mark.parametrize("name, message", [
    ("sentiment@9", "expert 'sentiment' serves no version '9'; served: 2 (stable), 3 (canary)"),
    ("vader@1", "expert 'vader' has no versions"),
    ("sentiment@", '"sentiment@": the version after @ must be a number or a label'),
    ("nothing@2", "unknown expert 'nothing'; this server runs: sentiment, vader, consensus"),
])
def test_a_version_not_served_is_unknown_expert_naming_what_is(rpc, name, message):
    with pytest.raises(zerorpc.RemoteError) as info:
        rpc.opinion(name, DOC)
    assert info.value.name == "UnknownExpert" and message in info.value.msg


def test_a_chain_reuses_a_carried_opinion_only_from_the_serving_version(rpc):
    carried = rpc.opinions(DOC, ["sentiment"])
    assert "recomputed" not in rpc.opinions(carried, ["consensus"])
    for versions, why in ((None, "no version recorded"), ({"sentiment": "3"}, "of version 3")):
        doc = dict(carried)
        doc.pop("versions")
        if versions:
            doc["versions"] = versions
        answered = rpc.opinions(doc, ["consensus"])
        assert why in answered["recomputed"]["sentiment"]
        assert "version 2 serves this call" in answered["recomputed"]["sentiment"]
        assert answered["versions"] == {"sentiment": "2"}


def test_the_pipe_stage_names_versions(versioned):
    lines = b"".join(json.dumps({"id": i, "text": f"good day {i}"}).encode() + b"\n"
                     for i in range(3))
    out = subprocess.run([str(BIN / "expertd"), "pipe", "--endpoint", versioned.endpoint,
                          "sentiment@canary", "vader"], input=lines, capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    docs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["id"] for d in docs] == [0, 1, 2]
    assert all(set(d["opinions"]) == {"sentiment@canary", "vader"} for d in docs)
    assert all(d["versions"] == {"sentiment@canary": "3"} for d in docs)
    # a carried opinion of another version goes through a second stage recomputed
    again = subprocess.run([str(BIN / "expertd"), "pipe", "--endpoint", versioned.endpoint,
                            "consensus"], input=out.stdout.replace(b"sentiment@canary", b"sentiment"),
                           capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    doc = json.loads(again.stdout.splitlines()[0])
    assert "of version 3" in doc["recomputed"]["sentiment"] and doc["versions"]["sentiment"] == "2"


def test_a_bad_version_on_the_pipe_is_a_usage_error(versioned):
    out = subprocess.run([str(BIN / "expertd"), "pipe", "--endpoint", versioned.endpoint,
                          "sentiment@"], input=b'{"text": "x"}\n', capture_output=True, timeout=60)
    assert out.returncode == 2 and b"the version after @" in out.stderr


def test_over_http(versioned):
    with running_bridge(versioned.endpoint) as url:
        status, opinion = post(f"{url}/experts/sentiment@canary", {"text": "so good"})
        assert status == 200 and opinion["label"]
        status, doc = post(f"{url}/opinions", {"doc": DOC, "experts": ["sentiment@3"]})
        assert status == 200 and doc["versions"] == {"sentiment@3": "3"}
        status, body = post(f"{url}/experts/sentiment@", {"text": "x"})
        assert status == 404 and body["error"]["name"] == "UnknownExpert"
        assert "the version after @" in body["error"]["message"]
        status, body = post(f"{url}/experts/sentiment@7", {"text": "x"})
        assert status == 404 and "served: 2 (stable), 3 (canary)" in body["error"]["message"]
        with urllib.request.urlopen(f"{url}/experts", timeout=30) as response:
            listed = {e["name"]: e for e in json.loads(response.read())}
        assert [v["version"] for v in listed["sentiment"]["versions"]] == ["2", "3"]
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=30) as response:
            document = json.loads(response.read())
        versioned_path = document["paths"]["/experts/sentiment@{version}"]["post"]
        assert versioned_path["parameters"][0]["schema"]["enum"] == ["2", "stable", "3", "canary"]
        enum = document["paths"]["/opinions"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["properties"]["experts"]["items"]["enum"]
        assert "sentiment@canary" in enum and "sentiment@3" in enum


def test_a_learner_shadows_a_frozen_expert_and_is_promoted_when_asked(tmp_path):
    versioned_models(tmp_path)
    path = tmp_path / "learner.yaml"
    path.write_text(textwrap.dedent("""\
        experts:
          sentiment:
            expert: expertd.experts.keras_text:SentimentExpert
            options: {model_dir: models/sentiment}
            versions: [2]
            shadow: learner
          learner:
            expert: expertd.experts.online:OnlineTextExpert
            learn: {checkpoint_every: 1000, checkpoint_seconds: 60}
        """))
    server = ServerProcess(path, tmp_path)
    client = zerorpc.Client(server.endpoint, timeout=30)
    try:
        examples = [{"text": t, "label": label} for t, label in (
            ("I love it, wonderful", "positive"), ("great and lovely", "positive"),
            ("awful, I hate it", "negative"), ("terrible and sad", "negative"))] * 5
        assert client.learn("learner", examples)["accepted"] == 20
        docs = [{"text": t} for t in ("so wonderful and lovely", "sad and awful", "I love it")] * 10
        answered = client.opinions_batch(docs, ["sentiment"])
        assert all(d["versions"] == {"sentiment": "2"} for d in answered)

        def agreement():
            entry = [e for e in client.experts() if e["name"] == "sentiment"][0]
            return entry["shadow_agreement"] and entry["shadow_agreement"][0]

        found = wait_for(agreement, what="the learner's agreement with sentiment")
        assert found["serving"] == "2" and found["shadow"] == "learner"
        assert found["documents"] >= 30 and 0 <= found["agreement"]["label"] <= 1
        members = [v for v in [e for e in client.experts() if e["name"] == "sentiment"][0]["versions"]
                   if v.get("expert")]
        assert members == [{"version": "learner", "labels": [], "default": False, "metrics": {},
                            "expert": "learner", "learns": True}]
        before = client.health()["learning"]["learner"]["model_version"]
        client.learn("learner", examples[:4])  # it keeps learning while it shadows
        wait_for(lambda: client.health()["learning"]["learner"]["model_version"] > before,
                 what="the learner to apply more examples")

        cli = [str(BIN / "expertd"), "expert"]
        done = subprocess.run([*cli, "promote", "sentiment", "learner", "--endpoint",
                               server.endpoint], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        doc = client.opinions({"text": "so wonderful"}, ["sentiment"])
        assert doc["versions"] == {"sentiment": "learner"} and doc["opinions"]["sentiment"]["label"]
        refused = subprocess.run([*cli, "unload", "sentiment", "learner", "--endpoint",
                                  server.endpoint], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "is another expert of this server" in refused.stderr
        done = subprocess.run([*cli, "rollback", "sentiment", "--endpoint", server.endpoint],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert client.opinions({"text": "x y"}, ["sentiment"])["versions"] == {"sentiment": "2"}
    finally:
        client.close()
        server.stop()


def test_a_watched_versions_folder_serves_each_new_version(tmp_path):
    versioned_models(tmp_path)
    shutil.rmtree(tmp_path / "models" / "sentiment" / "3")
    path = tmp_path / "watched.yaml"
    path.write_text(textwrap.dedent("""\
        experts:
          sentiment:
            expert: expertd.experts.keras_text:SentimentExpert
            options: {model_dir: models/sentiment}
            versions: latest
            watch_s: 0.2
        """))
    server = ServerProcess(path, tmp_path)
    client = zerorpc.Client(server.endpoint, timeout=30)
    try:
        served = lambda: client.health()["served_versions"]["sentiment"]  # noqa: E731
        assert served()["default"] == "2"
        broken = tmp_path / "models" / "sentiment" / "4"
        broken.mkdir()
        (broken / "model.keras").write_text("half copied")
        wait_for(lambda: "version 4 failed to load" in server.read_log(), what="4 refused")
        assert served()["default"] == "2" and client.opinion("sentiment", DOC)["label"]
        shutil.rmtree(broken)
        shutil.copytree(MODELS / "sentiment", tmp_path / "models" / "sentiment" / "3")
        wait_for(lambda: served()["default"] == "3", what="version 3 to be promoted")
        assert client.opinions(DOC, ["sentiment"])["versions"] == {"sentiment": "3"}
        assert served()["versions"] == ["2", "3"]
    finally:
        client.close()
        server.stop()
