"""``rpc_server.incremental``: the same bytes and objects as msgpack, with the loop let go."""

from __future__ import annotations

import gevent
import msgpack
import pytest

from expertd.rpc_server import incremental
from tests.corpus.events import EVENTS


def ticker():
    """A greenlet counting how often it got to run, and its counter."""
    ticks = [0]

    def run():
        while True:
            ticks[0] += 1
            gevent.sleep(0)

    return gevent.spawn(run), ticks


@pytest.mark.parametrize("case", sorted(EVENTS))
def test_unpack_decodes_every_corpus_event_as_msgpack_does(case):
    blob = EVENTS[case][0][-1]
    try:
        expected = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - whatever msgpack refuses, unpack refuses
        with pytest.raises(type(exc)):
            incremental.unpack(blob)
    else:
        assert incremental.unpack(blob) == expected


def test_pack_writes_the_bytes_zerorpc_writes():
    docs = [{"text": f"doc {i}", "opinions": {"x": [i, 1.5, None, True]}} for i in range(2000)]
    for count in (65, 79, 80, 128, 1000):  # last slices of 1, 15, 16, 64 and 40 items
        header = {"message_id": "e", "v": 3}
        assert incremental.pack(header, "OK", [docs[:count]]) == \
            msgpack.Packer(use_bin_type=True).pack((header, "OK", [docs[:count]]))
    for header, name, args in [({"message_id": "a", "v": 3}, "OK", (docs,)),
                               ({"message_id": "b", "v": 3, "response_to": "a"}, "OK", [docs, 7]),
                               ({"message_id": "c"}, "ERR", ["Name", "message", ""]),
                               ({"message_id": "d"}, "OK", "not a list")]:
        assert incremental.pack(header, name, args) == \
            msgpack.Packer(use_bin_type=True).pack((header, name, args))


def test_big_lists_are_decoded_encoded_and_walked_while_other_greenlets_run():
    docs = [{"text": "x"}] * 10 * incremental.SLICE
    blob = msgpack.packb([{"message_id": "m", "v": 3}, "batch", ["e", docs]])
    for work in (lambda: incremental.unpack(blob),
                 lambda: incremental.pack({"message_id": "m"}, "OK", [docs]),
                 lambda: list(incremental.cooperatively(docs))):
        task, ticks = ticker()
        gevent.sleep(0)
        before = ticks[0]
        work()
        task.kill()
        assert ticks[0] - before >= 9
