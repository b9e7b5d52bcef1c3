"""Clients spread their load over the workers of ``expertd serve --workers 2``.

The kernel hands each connection (not each call) to one worker, so a client
whose calls should reach several workers keeps several connections: the pipe
stage when it streams (``--connections``), ``ExpertsClient`` for concurrent
calls. Real processes, no TensorFlow (``vader``); which worker answered is
read from each worker's own ``stats()``.
"""

from __future__ import annotations

import json
import os
import subprocess

import gevent
import pytest
import zerorpc

from expertd.clients import ExpertsClient
from tests.conftest import EXPERTD, ROOT, ServerProcess
from tests.e2e.test_workers import VADER_CONFIG, Supervised, items_per_worker


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """``expertd serve --workers 2`` serving vader (one server for this module)."""
    server = Supervised(VADER_CONFIG, tmp_path_factory.mktemp("spread"), 2)
    yield server
    assert server.stop() == 0, server.read_log()


def stream(endpoint: str, docs: list[dict], *options: str) -> subprocess.CompletedProcess:
    """One ``expertd pipe --lines vader`` over ``docs``."""
    stdin = b"".join(json.dumps(d).encode() + b"\n" for d in docs)
    return subprocess.run([EXPERTD, "pipe", "--lines", "vader", "--endpoint", endpoint,
                           *options], input=stdin, capture_output=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ))


def test_a_streaming_pipe_spreads_its_chunks_over_both_workers(workers):
    before = items_per_worker(workers.endpoint)
    assert len(before) == 2
    docs = [{"i": i, "text": f"doc {i} is rather good"} for i in range(20_000)]
    out = stream(workers.endpoint, docs)
    assert out.returncode == 0, out.stderr.decode()
    answered = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["i"] for d in answered] == list(range(len(docs)))  # in order, every one
    assert all("compound" in d["opinions"]["vader"] for d in answered)
    after = items_per_worker(workers.endpoint)
    served = {pid: after[pid] - before[pid] for pid in after}
    assert sum(served.values()) == len(docs)
    assert all(n > 0 for n in served.values()), f"one worker did all the work: {served}"
    # ... while a one-document run stays as cheap as it was: one connection, one worker.
    out = stream(workers.endpoint, [{"text": "good"}])
    assert out.returncode == 0 and json.loads(out.stdout)["opinions"]["vader"]
    once = items_per_worker(workers.endpoint)
    assert sorted(once[pid] - after[pid] for pid in once) == [0, 1]


def test_connections_1_keeps_a_stream_on_one_worker(workers):
    before = items_per_worker(workers.endpoint)
    out = stream(workers.endpoint, [{"text": "good"}] * 5_000, "--connections", "1")
    assert out.returncode == 0, out.stderr.decode()
    after = items_per_worker(workers.endpoint)
    served = sorted(after[pid] - before[pid] for pid in after)
    assert served == [0, 5_000]


def test_experts_client_spreads_concurrent_calls_over_both_workers(workers):
    before = items_per_worker(workers.endpoint)
    docs = [{"text": "a fine and lovely day"}] * 200
    with ExpertsClient(workers.endpoint, timeout=30, connections=2) as experts:
        calls = [gevent.spawn(experts.opinions_batch, docs, ["vader"]) for _ in range(40)]
        gevent.joinall(calls, raise_error=True)
        assert all(len(call.value) == len(docs) for call in calls)
        assert len(experts._clients) == 2
    after = items_per_worker(workers.endpoint)
    served = {pid: after[pid] - before[pid] for pid in after}
    assert sum(served.values()) == 40 * len(docs)
    assert all(n > 0 for n in served.values()), f"one worker did all the work: {served}"


def test_experts_client_in_sequence_keeps_one_connection(workers):
    with ExpertsClient(workers.endpoint, timeout=30, connections=4) as experts:
        for _ in range(20):
            assert experts.vader({"text": "good"})["label"] == "positive"
        assert len(experts._clients) == 1


def test_experts_client_refuses_a_bad_connections_count():
    with pytest.raises(ValueError, match="connections must be an integer >= 1"):
        ExpertsClient("tcp://127.0.0.1:9", connections=0)



def test_calls_waiting_on_a_second_connection_keep_their_heartbeats(tmp_path):
    # The stage waits on one connection at a time (answers come out in order); a
    # call on its other connection must still get heartbeats meanwhile, or the
    # server (zerorpc: no heartbeat for two intervals) drops it and the stage
    # waits for --call-timeout and asks again: the server would count 3 calls.
    config = tmp_path / "slow.yaml"
    config.write_text("experts:\n  slow:\n    expert: expertd.experts.examples:SlowExpert\n"
                      "    options: {seconds: 20}\n    batch: {max_size: 1}\n")
    server = ServerProcess(config, tmp_path)
    try:
        out = subprocess.run([EXPERTD, "pipe", "--lines", "slow", "--batch-size", "1",
                              "--call-timeout", "45", "--endpoint", server.endpoint],
                             input=b'{"text": "a"}\n{"text": "b"}\n', capture_output=True,
                             timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr.decode()
        assert [json.loads(line)["opinions"]["slow"] for line in out.stdout.splitlines()] == \
            [{"slept": 20}, {"slept": 20}]
        client = zerorpc.Client(server.endpoint, timeout=10)
        assert client.stats()["experts"]["slow"]["calls"] == 2
        client.close()
    finally:
        assert server.stop() == 0, server.read_log()


def test_a_worker_map_opens_a_spare_on_the_other_worker_then_a_crowded_one(workers):
    from expertd.clients.spread import WorkerMap, identity
    from expertd.clients.wire import connect

    def open_connection():
        return connect(workers.endpoint, timeout=10)

    def worker(connection):
        return identity(connection.call("health"))[0]

    first = open_connection()
    opened = [first]
    try:
        workers_map = WorkerMap()
        spare, crowded = workers_map.open_spare([first], open_connection,
                                                lambda c: c.call("health"), lambda c: c.close())
        opened.append(spare)
        assert not crowded and worker(spare) != worker(first)
        # Both workers are taken now: the next spare lands on one of them, and says so.
        third, crowded = workers_map.open_spare([first, spare], open_connection,
                                                lambda c: c.call("health"), lambda c: c.close())
        opened.append(third)
        assert crowded and worker(third) in {worker(first), worker(spare)}
    finally:
        for connection in opened:
            connection.close()
