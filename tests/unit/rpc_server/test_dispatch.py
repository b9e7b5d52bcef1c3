"""``rpc_server.transport.dispatch``: the guarded dispatcher, in-process against the corpus.

Each hostile event of ``tests/corpus/events.py`` goes from a raw DEALER to a
real ``transport.Server`` whose methods accept anything; the transport owes
the corpus's answer when it is its own (no reply, ``MalformedEvent``,
``UnknownMethod``) and otherwise hands the call to the method (``OK``). After
each one a normal call must still be answered.
"""

from __future__ import annotations

import gevent
import msgpack
import pytest
import zerorpc

from expertd.rpc_server import transport
from expertd.rpc_server.transport import dispatch
from tests.corpus.events import EVENTS, ID, flood
from tests.unit.rpc_server.conftest import client, running

TRANSPORT_ANSWERS = (None, "MalformedEvent", "UnknownMethod")


def accept_anything(*args):
    """Stands for an expert: whatever it was sent, an answer."""
    return len(args)


#: How long ``slow`` keeps its channel open: longer than any other call here may take on a loaded machine.
SLOW_S = 3.0


def slow(*args):
    """A call that keeps its channel open for a while."""
    gevent.sleep(SLOW_S)
    return "slow done"


def wait_until(condition, timeout: float = 10.0) -> bool:
    """Let the loop run until ``condition()`` holds (True), or ``timeout`` passes (False)."""
    deadline = gevent.get_hub().loop.now() + timeout
    while not condition():
        if gevent.get_hub().loop.now() > deadline:
            return False
        gevent.sleep(0.01)
    return True


@pytest.fixture(scope="module")
def server():
    """One transport server for the whole corpus (the dispatcher must outlive every event)."""
    srv = transport.Server({"opinion": accept_anything, "batch": accept_anything,
                            "slow": slow}, name="corpus")
    with running(srv) as endpoint:
        srv.endpoint = endpoint
        yield srv


@pytest.mark.parametrize("case", sorted(EVENTS))
def test_a_hostile_event_is_answered_or_dropped_and_dispatch_goes_on(case, server, peer_to):
    frames, expected = EVENTS[case]
    peer = peer_to(server.endpoint)
    peer.send(frames)
    reply = peer.reply(2000 if expected else 300)
    while reply is not None and reply[1].startswith("_zpc_"):
        reply = peer.reply(2000)
    if expected is None:
        assert reply is None, reply
    else:
        assert reply is not None, f"no reply to {case}"
        header, name, args = reply
        assert header.get("response_to") == ID
        if expected in TRANSPORT_ANSWERS:
            assert name == "ERR" and args[0] == expected, args
            assert "Traceback" not in str(args)
        else:
            assert name == "OK", args
    with client(server.endpoint) as c:
        assert c.opinion("vader", {"text": "still here"}) == 2


def test_a_flood_for_a_busy_call_costs_only_that_call(server, peer_to):
    peer = peer_to(server.endpoint)
    dropped = server.dropped_events
    before = server.in_flight
    peer.send([b"", msgpack.packb([{"message_id": ID, "v": 3}, "slow", []])])
    assert wait_until(lambda: server.in_flight > before)
    for frames in flood(ID):
        peer.send(frames)
    with client(server.endpoint) as c:
        assert c.opinion("vader", {}) == 2
    # answered while the slow call still runs: not queued behind it
    assert server.in_flight == before + 1
    assert wait_until(lambda: server.dropped_events > dropped)  # the overflow was dropped, not queued


def test_an_event_for_another_peers_call_is_dropped(server, peer_to):
    owner, intruder = peer_to(server.endpoint), peer_to(server.endpoint)
    dropped = server.dropped_events
    before = server.in_flight
    owner.send([b"", msgpack.packb([{"message_id": "owned", "v": 3}, "slow", []])])
    assert wait_until(lambda: server.in_flight > before)
    intruder.send([b"", msgpack.packb([{"message_id": "x", "v": 3, "response_to": "owned"},
                                       "_zpc_more", [1]])])
    assert wait_until(lambda: server.dropped_events > dropped)
    assert server.dropped_events == dropped + 1
    reply = owner.reply(int(SLOW_S * 2000))
    while reply is not None and reply[1].startswith("_zpc_"):
        reply = owner.reply(int(SLOW_S * 2000))
    assert reply[1:] == ["OK", ["slow done"]]


def test_decode_and_malformation_without_a_server():
    good = [b"id", b"", msgpack.packb([{"message_id": ID, "v": 3}, "opinion", []])]
    event = dispatch.decode(good)
    assert event.identity == [b"id"] and event.name == "opinion"
    assert dispatch.malformation(event) is None
    bad = dispatch.decode([b"id", b"", msgpack.packb([{"message_id": ID, "v": 3,
                                                       "response_to": [1]}, "x", []])])
    assert dispatch.malformation(bad) == "response_to is not a string"
    with pytest.raises(ValueError):
        dispatch.decode([b"id", b"", msgpack.packb([1, 2])])


def test_a_stock_client_call_still_works_through_the_guard(server):
    with client(server.endpoint) as c:
        assert c.batch("x", [1, 2]) == 2
        with pytest.raises(zerorpc.RemoteError) as caught:
            c.nothing_here()
        assert caught.value.name == "UnknownMethod"
