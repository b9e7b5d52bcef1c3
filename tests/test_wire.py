"""The lean ZMTP client of the pipe stage, against a real zerorpc server."""

from __future__ import annotations

import threading

import pytest

from clients.wire import Connection, RemoteError, ServerUnavailable
from tests.conftest import ServerProcess, free_port


@pytest.fixture(scope="module")
def beating_server(tmp_path_factory):
    """A server with a 1 s heartbeat and two 4 s experts (so two calls run at once)."""
    tmp = tmp_path_factory.mktemp("beat")
    config = tmp / "experts.yaml"
    config.write_text("experts:\n"
                      "  slow_a: {expert: experts.examples:SlowExpert, options: {seconds: 4}}\n"
                      "  slow_b: {expert: experts.examples:SlowExpert, options: {seconds: 4}}\n"
                      "  shouting: experts.examples:shouting\n")
    proc = ServerProcess(config, tmp, "--heartbeat", "1")
    yield proc
    assert proc.stop() == 0, proc.read_log()


def test_heartbeats_keep_a_long_call_alive_and_their_absence_does_not(beating_server):
    results = {}

    def call(name, heartbeat):
        try:
            with Connection(beating_server.endpoint, timeout=8, heartbeat=heartbeat) as c:
                results[heartbeat] = c.call(name, {"text": "x"})
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results[heartbeat] = exc

    threads = [threading.Thread(target=call, args=("slow_a", 0.5)),
               threading.Thread(target=call, args=("slow_b", 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0.5] == {"slept": 4}
    # Without heartbeats the server gives up on the caller after two missed beats.
    assert not isinstance(results[1000], dict), results[1000]


def test_pipelined_calls_and_remote_errors(beating_server):
    with Connection(beating_server.endpoint, timeout=15) as c:
        ids = [c.send("shouting", {"text": t}) for t in ("AB", "ab", "Ab")]
        assert [c.receive(i)["ratio"] for i in reversed(ids)] == [0.5, 0.0, 1.0]
        with pytest.raises(RemoteError) as info:
            c.call("opinion", "nope", {"text": "x"})
        assert info.value.name == "UnknownExpert"
        big = "Ä" * 300_000  # frames over 255 bytes use the long size form
        assert c.call("shouting", {"text": big}) == {"ratio": 1.0}


def test_nothing_listening():
    with pytest.raises(ServerUnavailable):
        Connection(f"tcp://127.0.0.1:{free_port()}", timeout=2)


def test_bad_endpoint():
    with pytest.raises(ValueError):
        Connection("udp://127.0.0.1:1", timeout=1)
