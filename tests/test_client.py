"""The Python client class, against a real server."""

from __future__ import annotations

import threading
import time

import pytest
import zerorpc

from clients import ExpertsClient
from tests.conftest import ServerProcess, free_port


def test_client_calls_every_method(server, monkeypatch):
    monkeypatch.setenv("EXPERTD_ENDPOINT", server.endpoint)
    with ExpertsClient(timeout=30) as experts:
        assert experts.endpoint == server.endpoint
        assert experts.health()["status"] == "ok"
        assert experts.sentiment({"text": "I love it"})["label"] == "positive"
        assert experts.opinion("vader", {"text": "I love it"})["label"] == "positive"
        doc = experts.opinions({"text": "I love it"}, ["sentiment", "genre"])
        assert set(doc["opinions"]) == {"sentiment", "genre"}
        assert len(experts.batch("genre", [{"text": "a"}, {"text": "b"}])) == 2
        assert len(experts.opinions_batch([{"text": "a"}, {"x": 1}], ["vader"])) == 2
        assert {e["name"] for e in experts.experts()} == {"sentiment", "genre", "vader", "learner"}
        assert "sentiment" in experts.stats()["experts"]


def test_client_remote_errors_are_not_retried(server):
    with ExpertsClient(server.endpoint, timeout=10) as experts:
        with pytest.raises(zerorpc.RemoteError) as info:
            experts.opinion("nope", {"text": "x"})
        assert info.value.name == "UnknownExpert"


def test_client_retries_until_a_server_comes_up(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  vader: experts.vader:VaderExpert\n")
    started = {}

    def start_later():
        time.sleep(2)
        started["server"] = ServerProcess(config, tmp_path, endpoint=endpoint)

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        with ExpertsClient(endpoint, timeout=2, retries=20, backoff=0.1) as experts:
            assert experts.vader({"text": "good"})["label"] == "positive"
    finally:
        thread.join()
        assert started["server"].stop() == 0
