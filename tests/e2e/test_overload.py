"""Admission control and fair batching on the server (issue 9), against a real process.

The counting experts sleep per model call and count the inputs they computed,
so a test sees both what the caller was told and what work was done.
"""

from __future__ import annotations

import gevent
import msgpack
import pytest
import zerorpc
import zmq

from expertd.spec import TIMEOUT_HEADER
from tests.e2e.test_hostile import hostile  # noqa: F401  (the module's server fixture)


def clients(endpoint, n):
    return [zerorpc.Client(endpoint, timeout=30) for _ in range(n)]


def test_a_full_queue_answers_overloaded_at_once_and_expired_work_is_not_computed(hostile):  # noqa: F811
    first, *others, last = clients(hostile.endpoint, 7)
    try:
        base = last.counting({"text": "warm"})["computed"]
        running = gevent.spawn(first.counting, {"text": "first"})
        gevent.sleep(0.2)  # the first call is in the model now (1 s)
        queued = [gevent.spawn(c.counting, {"text": f"queued {i}"}) for i, c in enumerate(others[:4])]
        gevent.sleep(0.1)  # four documents queued: the queue (max_docs 4) is full
        with pytest.raises(zerorpc.RemoteError) as info:
            others[4].counting({"text": "one too many"})
        assert info.value.name == "Overloaded" and "max_docs 4" in info.value.msg
        assert not running.ready()  # refused at once, not after the running call
        gevent.joinall(queued + [running])
        assert running.value == {"computed": base + 1}
        for job in queued:  # they waited ~0.9 s, over the 300 ms budget: never computed
            assert isinstance(job.exception, zerorpc.RemoteError), job.value
            assert job.exception.name == "Overloaded" and "budget" in job.exception.msg
        assert last.counting({"text": "after"}) == {"computed": base + 2}
        stats = last.stats()["experts"]["counting"]
        assert stats["shed"] >= 5
    finally:
        for c in [first, *others, last]:
            c.close()


def test_a_caller_deadline_that_passes_in_the_queue_is_not_computed(hostile):  # noqa: F811
    busy, check = clients(hostile.endpoint, 2)
    context = zmq.Context()
    peer = context.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(hostile.endpoint)
    try:
        base = check.patient({"text": "warm"})["computed"]
        running = gevent.spawn(busy.patient, {"text": "busy"})
        gevent.sleep(0.2)
        header = {"message_id": "deadline-1", "v": 3, TIMEOUT_HEADER: 200}
        peer.send_multipart([b"", msgpack.packb([header, "patient", [{"text": "in a hurry"}]])])
        assert peer.poll(5000)
        _, name, args = msgpack.unpackb(peer.recv_multipart()[-1], raw=False)
        assert name == "ERR" and args[0] == "Overloaded" and "deadline" in args[1]
        running.get()
        assert check.patient({"text": "after"}) == {"computed": base + 2}
    finally:
        peer.close()
        context.term()
        busy.close()
        check.close()


def test_a_one_document_call_does_not_wait_for_a_large_batch(hostile):  # noqa: F811
    big, small = clients(hostile.endpoint, 2)
    try:
        small.steady({"text": "warm"})
        batch = gevent.spawn(big.batch, "steady", [{"text": "x"}] * 100_000)
        gevent.sleep(0.5)  # the batch is being served in chunks now
        assert not batch.ready()
        assert "computed" in small.steady({"text": "quick"})
        assert not batch.ready(), "the one-document call waited for the whole batch"
        assert len(batch.get()) == 100_000
    finally:
        big.close()
        small.close()
