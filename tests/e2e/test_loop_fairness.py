"""A 100,000-document call never holds the server's loop (issue 9), against a real process.

Decoding a big call, checking and merging its documents and encoding its answer
happen a slice at a time, and a one-document call is never computed together
with a chunk of a big batch; so a one-document call sent behind a big one is
answered first. No timing: the tests look at the order of the answers and at
what each model call held.
"""

from __future__ import annotations

import gevent
import msgpack
import zerorpc

from tests.e2e.test_hostile import hostile, peer  # noqa: F401  (the module's server fixtures)

BIG = 100_000


def answers(sock, count: int) -> list[tuple[str, str, list]]:
    """The next ``count`` replies (``response_to``, name, args), heartbeats skipped."""
    out = []
    while len(out) < count:
        assert sock.poll(60_000), f"no reply after {[r[0] for r in out]}"
        header, name, args = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
        if name != "_zpc_hb":
            out.append((header.get("response_to"), name, args))
    return out


def test_a_one_document_call_is_answered_while_a_big_call_is_decoded_checked_and_merged(
        hostile, peer):  # noqa: F811
    # No document has the expert's field: the big call is all decoding, checking,
    # merging (an error per document) and encoding, with no model call to wait on.
    docs = [{"body": f"no text {i}"} for i in range(BIG)]
    big = msgpack.packb([{"message_id": "big", "v": 3}, "opinions_batch", [docs, ["poison"]]])
    small = msgpack.packb([{"message_id": "small", "v": 3}, "poison", [{"text": "abc"}]])
    peer.send_multipart([b"", big])
    peer.send_multipart([b"", small])
    first, second = answers(peer, 2)
    assert first == ("small", "OK", [{"length": 3}])
    assert second[:2] == ("big", "OK")
    merged = second[2][0]
    assert len(merged) == BIG and merged[-1]["body"] == f"no text {BIG - 1}"
    assert {doc["errors"]["poison"]["name"] for doc in merged} == {"InvalidDocument"}


def test_a_one_document_call_is_never_computed_with_a_chunk_of_a_big_batch(hostile):  # noqa: F811
    big, small = (zerorpc.Client(hostile.endpoint, timeout=60) for _ in range(2))
    try:
        small.sized({"text": "warm"})
        batch = gevent.spawn(big.batch, "sized", [{"text": "x"}] * BIG)
        sizes = []
        while not batch.ready():
            sizes.append(small.sized({"text": "quick"})["call_size"])
        assert len(batch.get()) == BIG
        # max_size is 64: a one-document call shares a model call only with small ones
        # (or the tail of the batch), never with one of its chunks.
        assert sizes and max(sizes) <= 64, sizes
    finally:
        big.close()
        small.close()
