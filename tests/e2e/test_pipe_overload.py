"""Overload costs a stream time, never a document: the pipe stage and the client retry ``Overloaded``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from expertd.clients.wire import Connection
from tests.conftest import BIN, ROOT, ServerProcess

EXPERTD = str(BIN / "expertd")
CONFIG = Path(__file__).resolve().parents[1] / "pipe_overload.yaml"


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A server whose one expert takes 0.2 s a call and queues at most 4 documents."""
    proc = ServerProcess(CONFIG, tmp_path_factory.mktemp("tight"))
    yield proc
    assert proc.stop() == 0, proc.read_log()


def shed(server) -> int:
    """How many requests the server has answered ``Overloaded`` so far."""
    with Connection(server.endpoint, timeout=10) as connection:
        return connection.call("stats")["experts"]["tight"]["shed"]


def test_zero_unanswered_pipe_documents_through_a_spell_of_overloaded(tight):
    before = shed(tight)
    env = dict(os.environ, EXPERTD_ENDPOINT=tight.endpoint, PYTHONPATH=str(ROOT))
    streams = []
    for s in range(4):
        stdin = b"".join(json.dumps({"s": s, "n": n, "text": "x"}).encode() + b"\n"
                         for n in range(24))
        proc = subprocess.Popen([EXPERTD, "pipe", "--batch-size", "2", "--timeout", "120",
                                 "tight"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        streams.append((proc, stdin))
    for proc, stdin in streams:
        proc.stdin.write(stdin)
        proc.stdin.close()
    for s, (proc, _) in enumerate(streams):
        out = proc.stdout.read()
        err = proc.stderr.read()
        assert proc.wait(120) == 0, err
        docs = [json.loads(line) for line in out.splitlines()]
        assert [(d["s"], d["n"]) for d in docs] == [(s, n) for n in range(24)]
        assert all("computed" in d["opinions"]["tight"] for d in docs)
    # The spell happened: the server shed load while every document was answered.
    assert shed(tight) > before


def test_client_retries_overloaded(tight):
    import gevent

    from expertd.clients import ExpertsClient

    before = shed(tight)
    results = []

    def ask(i):
        with ExpertsClient(tight.endpoint, timeout=30, retries=60, backoff=0.05) as experts:
            results.append(experts.batch("tight", [{"text": str(i)}, {"text": "y"}]))

    gevent.joinall([gevent.spawn(ask, i) for i in range(8)], raise_error=True)
    assert len(results) == 8 and all(len(r) == 2 for r in results)
    assert shed(tight) > before


def test_client_gives_up_on_overloaded_after_its_retries(tight):
    import gevent
    import zerorpc

    from expertd.clients import ExpertsClient

    errors = []

    def ask(i):
        with ExpertsClient(tight.endpoint, timeout=30, retries=0) as experts:
            try:
                experts.batch("tight", [{"text": str(i)}] * 3)
            except zerorpc.RemoteError as exc:
                errors.append(exc.name)

    gevent.joinall([gevent.spawn(ask, i) for i in range(6)], raise_error=True)
    assert errors and set(errors) == {"Overloaded"}
