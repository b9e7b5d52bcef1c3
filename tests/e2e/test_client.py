"""The Python client class, against a real server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import zerorpc

from expertd.clients import ExpertsClient
from expertd.clients.client import ServerTimeout
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
        assert {e["name"] for e in experts.experts()} == {"sentiment", "genre", "vader", "learner",
                                                          "consensus"}
        assert "sentiment" in experts.stats()["experts"]


def test_client_remote_errors_are_not_retried(server):
    with ExpertsClient(server.endpoint, timeout=10) as experts:
        with pytest.raises(zerorpc.RemoteError) as info:
            experts.opinion("nope", {"text": "x"})
        assert info.value.name == "UnknownExpert"


def test_client_retries_until_a_server_comes_up(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  vader: expertd.experts.vader:VaderExpert\n")
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


def test_experts_named_like_client_methods_are_reachable(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n"
                      "  timeout: expertd.experts.examples:shouting\n"
                      "  close: expertd.experts.examples:shouting\n"
                      "  call: expertd.experts.examples:shouting\n")
    server = ServerProcess(config, tmp_path)
    try:
        with ExpertsClient(server.endpoint, timeout=10) as experts:
            for name in ("timeout", "close", "call"):
                assert experts.expert(name)({"text": "HEY"}) == {"ratio": 1.0}
            # Settings are private, so an expert called "timeout" is an attribute too.
            assert experts.timeout({"text": "Hey"}) == {"ratio": 0.3333}
    finally:
        assert server.stop() == 0


def test_timeout_names_the_endpoint_and_how_to_start_a_server():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with ExpertsClient(endpoint, timeout=0.5, retries=1, backoff=0.05) as experts:
        with pytest.raises(zerorpc.TimeoutExpired) as info:
            experts.health()
    assert isinstance(info.value, ServerTimeout)
    message = str(info.value)
    assert endpoint in message and "expertd serve" in message and "health()" in message
    assert "2 tries" in message


def test_no_server_prints_nothing_and_raises_one_clear_error():
    """A script whose server is absent sees one message, not gevent's tracebacks on stderr."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    script = (
        "from expertd import ExpertsClient\n"
        "try:\n"
        f"    ExpertsClient({endpoint!r}, timeout=0.5, retries=1, backoff=0.05).health()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.splitlines()) <= 3, run.stderr
    assert run.stdout.startswith("ServerTimeout "), run.stdout
    assert endpoint in run.stdout and "expertd serve" in run.stdout
    assert "EXPERTD_ENDPOINT" in run.stdout


def test_each_call_says_how_long_the_client_waits(tmp_path):
    """The header reaches a stock zerorpc server (which can read it through a middleware)."""
    from expertd.spec import TIMEOUT_HEADER

    seen = []

    class Record:
        def server_before_exec(self, event):
            seen.append(event.header.get(TIMEOUT_HEADER))

    class Echo:
        def echo(self, x):
            return x

    context = zerorpc.Context()
    context.register_middleware(Record())
    server = zerorpc.Server(Echo(), context=context)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server.bind(endpoint)
    import gevent

    task = gevent.spawn(server.run)
    try:
        with ExpertsClient(endpoint, timeout=7.5) as experts:
            assert experts.call("echo", 5) == 5
        plain = zerorpc.Client(endpoint, timeout=5)
        assert plain.echo(6) == 6  # a stock client's calls carry no such key
        plain.close()
    finally:
        server.close()
        task.kill()
    assert seen == [7500, None]
