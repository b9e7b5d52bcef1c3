"""Pins of the zerorpc behaviour that ``expertd.rpc_server.transport`` relies on.

zerorpc 0.6.3 is unmaintained and the transport uses its private attributes.
These tests check, on the installed zerorpc, with real servers and clients on
127.0.0.1 (in-process, gevent), that those attributes exist with the shape
the transport expects, that its hooks are called, and that the bugs it works
around are still there (a zerorpc release that fixes one fails its pin: the
workaround may then go). A future zerorpc release should fail here, not in
the server.
"""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import version

import gevent
import gevent.pool
import gevent.queue
import msgpack
import pytest
import zerorpc
import zerorpc.channel
import zerorpc.core
import zerorpc.decorators
import zerorpc.events
import zmq
from zmq.utils import z85

from expertd.clients.zerorpc_hooks import set_socket_option
from expertd.rpc_server import transport
from expertd.rpc_server.transport.dispatch import GuardedMultiplexer
from expertd.rpc_server.transport.server import MethodTable
from tests.unit.rpc_server.conftest import client, running

ID = "pin-0001"


def add(a, b=2):
    """Add two numbers."""
    return a + b


def fail():
    """Raise a plain exception (a bug of the server's, for the caller)."""
    raise KeyError("secret detail")


def unhashable_response_to() -> list[bytes]:
    """The event that killed zerorpc 0.6.3's dispatcher (see NOTES.md)."""
    return [b"", msgpack.packb([{"message_id": ID, "v": 3, "response_to": [1, 2]}, "add", [1]])]


# -- the private attributes, as the transport uses them ------------------------------

def test_the_installed_zerorpc_is_the_pinned_one():
    installed = version("zerorpc")
    assert installed == "0.6.3", (
        f"zerorpc {installed}: re-check every pin in this file, then raise the pin "
        f"in pyproject.toml")


def test_a_zerorpc_server_has_the_private_attributes_the_transport_uses():
    server = zerorpc.Server({"add": add}, name="pins")
    try:
        events = server._events
        assert isinstance(events, zerorpc.events.Events)
        assert isinstance(events._socket, zmq.Socket)
        assert isinstance(events._context, zmq.Context)
        assert events._socket.type == zmq.ROUTER == events._zmq_socket_type
        assert callable(events.setsockopt) and callable(events._recv) and callable(events._send)
        assert isinstance(server._multiplexer, zerorpc.channel.ChannelMultiplexer)
        assert server._multiplexer._events is events
        assert isinstance(server._multiplexer._active_channels, dict)
        assert isinstance(server._multiplexer._broadcast_queue, gevent.queue.Queue)
        assert isinstance(server._multiplexer._channel_dispatcher_task, gevent.Greenlet)
        assert isinstance(server._task_pool, gevent.pool.Pool)
        assert isinstance(server._methods, dict) and "add" in server._methods
        assert isinstance(server._methods["add"], zerorpc.decorators.DecoratorBase)
        assert server._methods["add"]._functor is add
        assert server._name == "pins"
    finally:
        server.close()


def test_the_private_hooks_the_transport_overrides_keep_their_signatures():
    base = zerorpc.core.ServerBase
    assert list(inspect.signature(base._print_traceback).parameters) == [
        "self", "protocol_v1", "exc_infos"]
    assert list(inspect.signature(base._inject_builtins).parameters) == ["self"]
    assert list(inspect.signature(zerorpc.channel.ChannelMultiplexer._channel_dispatcher)
                .parameters) == ["self"]
    assert list(inspect.signature(zerorpc.channel.ChannelMultiplexer.channel).parameters) == [
        "self", "from_event"]
    # A dict of methods is kept as it is (the transport passes its MethodTable), and a
    # call's method is looked up with .get (so MethodTable.get answers every name).
    table = MethodTable({"add": add})
    assert base._filter_methods(base, None, table) is table
    assert "self._methods.get(event.name, None)" in inspect.getsource(base._async_task)


def test_a_channel_and_an_event_have_the_shape_the_dispatcher_uses():
    server = zerorpc.Server({"add": add})
    try:
        event = zerorpc.events.Event("add", [1], None, {"message_id": ID, "v": 3})
        event.identity = [b"peer"]
        channel = zerorpc.channel.Channel(server._multiplexer, event)
        assert channel._channel_id == ID and channel._zmqid == [b"peer"]
        assert isinstance(channel._queue, gevent.queue.Queue) and channel._queue.maxsize == 1
        assert server._multiplexer._active_channels[ID] is channel
        assert channel._multiplexer is server._multiplexer
        channel.close()
        assert ID not in server._multiplexer._active_channels
        assert msgpack.unpackb(event.pack(), raw=False)[1:] == ["add", [1]]
    finally:
        server.close()


# -- the dispatcher: the bug, and the hook that replaces it -----------------------------

def test_stock_zerorpc_still_dies_on_an_unhashable_response_to(peer_to):
    # The bug transport.dispatch exists for. If this fails, zerorpc fixed it.
    server = zerorpc.Server({"add": add})
    with running(server) as endpoint:
        peer_to(endpoint).send(unhashable_response_to())
        gevent.sleep(0.3)
        assert server._multiplexer._channel_dispatcher_task.dead
        with client(endpoint, timeout=1) as c, pytest.raises(zerorpc.TimeoutExpired):
            c.add(1)


def test_the_transport_replaces_the_dispatcher_and_survives_that_event(peer_to):
    server = transport.Server({"add": add})
    assert isinstance(server._multiplexer, GuardedMultiplexer)
    with running(server) as endpoint:
        peer = peer_to(endpoint)
        peer.send(unhashable_response_to())
        assert peer.reply(300) is None  # dropped: it answers no call
        gevent.sleep(0.1)
        assert not server._multiplexer._channel_dispatcher_task.dead
        assert server.dropped_events == 1
        with client(endpoint) as c:
            assert c.add(1) == 3


def test_the_guarded_dispatcher_is_the_one_receiving(peer_to):
    # zerorpc spawns _channel_dispatcher in ChannelMultiplexer.__init__: ours must run.
    server = transport.Server({"add": add})
    with running(server) as endpoint:
        peer_to(endpoint).send([b"", b"\xc1 not msgpack"])
        gevent.sleep(0.2)
        assert server.dropped_events == 1  # only GuardedMultiplexer counts


# -- errors, introspection, the method table -------------------------------------------

def test_err_replies_carry_name_and_message_never_a_traceback():
    with running(transport.Server({"fail": fail})) as endpoint, client(endpoint) as c:
        with pytest.raises(zerorpc.RemoteError) as caught:
            c.fail()
    assert caught.value.name == "InternalError"
    assert "secret detail" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert str(caught.value).startswith("InternalError: the server failed on this call")


def test_stock_zerorpc_inspection_still_fails_on_this_python():
    if sys.version_info < (3, 11):
        pytest.skip("getargspec exists before 3.11")
    with running(zerorpc.Server({"add": add})) as endpoint, client(endpoint) as c:
        with pytest.raises(zerorpc.RemoteError, match="getargspec"):
            c._zerorpc_inspect()


def test_inspection_answers_on_this_python():
    with running(transport.Server({"add": add}, name="Pins")) as endpoint, client(endpoint) as c:
        assert c._zerorpc_inspect() == {"name": "Pins", "methods": {"add": {
            "args": [{"name": "a"}, {"name": "b", "default": 2}], "doc": "Add two numbers."}}}
        assert c._zerorpc_args("add") == [["a", "b"], None, None, [2]]
        assert c._zerorpc_help("add") == "Add two numbers."
        assert sorted(c._zerorpc_list()) == ["add"]
        with pytest.raises(zerorpc.RemoteError) as caught:
            c._zerorpc_help("nope")
        assert caught.value.name == "UnknownMethod"


def test_an_unknown_method_and_a_draining_server_answer_clearly():
    server = transport.Server({"add": add})
    with running(server) as endpoint, client(endpoint) as c:
        with pytest.raises(zerorpc.RemoteError) as caught:
            c.subtract(1)
        assert caught.value.name == "UnknownMethod" and "add" in caught.value.msg
        server.draining = True
        with pytest.raises(zerorpc.RemoteError) as caught:
            c.add(1)
        assert caught.value.name == "ShuttingDown"
        assert c._zerorpc_ping()[0] == "pong"  # builtins still answer


# -- socket options: limits and the client hook ------------------------------------------

def test_limits_are_set_on_the_socket_and_enforced(peer_to):
    server = transport.make_server({"add": add}, "Pins", 5.0, max_message_bytes=1000,
                                   handshake_timeout_ms=700)
    assert server.zmq_socket.getsockopt(zmq.MAXMSGSIZE) == 1000
    assert server.zmq_socket.getsockopt(zmq.HANDSHAKE_IVL) == 700
    with running(server) as endpoint:
        big = peer_to(endpoint)
        assert big.call("big", "add", [1, "x" * 5000], timeout_ms=500) is None  # disconnected
        small = peer_to(endpoint)
        assert small.call("small", "add", [1, 2])[1:] == ["OK", [3]]


def test_the_client_hook_sets_options_on_a_zerorpc_clients_socket():
    public, secret = zmq.curve_keypair()
    c = zerorpc.Client()
    try:
        set_socket_option(c, zmq.CURVE_SERVERKEY, public)
        set_socket_option(c, zmq.LINGER, 123)
        assert c._events._socket.getsockopt(zmq.LINGER) == 123
        assert c._events._socket.getsockopt(zmq.MECHANISM) == zmq.CURVE
    finally:
        c.close()


class Refusals:
    """Collects what ``CurveGuard`` reports (``security.RefusalLog``'s interface)."""

    def __init__(self) -> None:
        """Nothing refused yet."""
        self.seen: list[tuple] = []

    def refused(self, host, kind, reason):
        """Record one refusal."""
        self.seen.append((host, kind, reason))

    def flush(self, force=False):
        """Nothing to flush."""


def curve_client(endpoint: str, server_public: bytes, keys: tuple[bytes, bytes] | None,
                 timeout: float = 2.0) -> zerorpc.Client:
    """A stock zerorpc client with CURVE keys set through the client-side hook."""
    public, secret = keys or zmq.curve_keypair()
    c = zerorpc.Client(timeout=timeout)
    set_socket_option(c, zmq.CURVE_SERVERKEY, server_public)
    set_socket_option(c, zmq.CURVE_PUBLICKEY, public)
    set_socket_option(c, zmq.CURVE_SECRETKEY, secret)
    c.connect(endpoint)
    return c


def test_curve_guard_encrypts_and_its_zap_handler_admits_only_authorized_keys():
    server_public, server_secret = zmq.curve_keypair()
    friend = zmq.curve_keypair()
    allowed = {z85.decode(friend[0]): "friend.key"}
    refusals = Refusals()
    server = transport.Server({"add": add})
    guard = transport.CurveGuard(server, server_secret, refusals, allowed.get, "the test's keys")
    assert server.zmq_socket.getsockopt(zmq.CURVE_SERVER) == 1
    assert server.zmq_socket.getsockopt(zmq.MECHANISM) == zmq.CURVE
    try:
        with running(server) as endpoint:
            ok = curve_client(endpoint, server_public, friend)
            stranger = curve_client(endpoint, server_public, None, timeout=1.0)
            try:
                assert ok.add(1) == 3
                with pytest.raises(zerorpc.TimeoutExpired):
                    stranger.add(1)
            finally:
                ok.close()
                stranger.close()
    finally:
        guard.close()
    assert refusals.seen and refusals.seen[0][1] == "zap"
    assert "is not in the test's keys" in refusals.seen[0][2]


# -- the call pool: drain ------------------------------------------------------------------

def test_drain_lets_the_call_in_flight_finish_and_refuses_new_ones():
    def slow():
        gevent.sleep(0.5)
        return "done"

    server = transport.Server({"slow": slow, "add": add})
    with running(server) as endpoint, client(endpoint) as first, client(endpoint) as second:
        call = gevent.spawn(first.slow)
        gevent.sleep(0.1)
        assert server.in_flight == 1
        drainer = gevent.spawn(transport.drain, server, 5.0)
        gevent.sleep(0.05)
        with pytest.raises(zerorpc.RemoteError) as caught:
            second.add(1)
        assert caught.value.name == "ShuttingDown"
        assert call.get(timeout=3) == "done"
        drainer.get(timeout=3)
        assert server.in_flight == 0


def test_drain_gives_up_after_its_timeout():
    def forever():
        gevent.sleep(60)

    server = transport.Server({"forever": forever})
    with running(server) as endpoint, client(endpoint, timeout=3) as c:
        hung = gevent.spawn(c.forever)
        try:
            gevent.sleep(0.1)
            assert server.in_flight == 1
            transport.drain(server, 0.3)
            assert server.in_flight == 0
        finally:
            hung.kill()  # its TimeoutExpired would print into a later test's output


def test_retire_waits_for_an_idle_moment_then_closes_the_listener():
    def slow():
        gevent.sleep(0.4)
        return "done"

    server = transport.Server({"slow": slow, "add": add})
    with running(server) as endpoint, client(endpoint) as c:
        call = gevent.spawn(c.slow)
        gevent.sleep(0.05)
        retiring = gevent.spawn(transport.retire, server, endpoint, 5.0, 0.01)
        gevent.sleep(0.1)
        assert not retiring.ready()  # a call is in flight: the listener stays open
        assert call.get(timeout=3) == "done"
        retiring.get(timeout=3)
        assert not server.draining  # idle before half the timeout: nobody was refused
        with client(endpoint, timeout=0.5) as late, pytest.raises(zerorpc.TimeoutExpired):
            late.add(1)


def test_retire_refuses_new_calls_past_half_its_timeout_and_gives_up_at_the_end():
    def forever():
        gevent.sleep(60)

    server = transport.Server({"forever": forever, "add": add})
    with running(server) as endpoint, client(endpoint, timeout=3) as c:
        hung = gevent.spawn(c.forever)
        try:
            gevent.sleep(0.05)
            retiring = gevent.spawn(transport.retire, server, endpoint, 0.6, 0.01)
            gevent.sleep(0.4)
            assert server.draining
            with pytest.raises(zerorpc.RemoteError) as caught:
                c.add(1)
            assert caught.value.name == "ShuttingDown"
            retiring.get(timeout=3)
            assert server.in_flight == 0
        finally:
            hung.kill()  # its TimeoutExpired would print into a later test's output
