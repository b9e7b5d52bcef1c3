"""``rpc_server.transport.reuseport``: two zerorpc servers answering on one TCP port.

Two ``transport.Server`` instances in this process each bind a listening
socket of their own (``SO_REUSEPORT``) on the same port and hand it to ZeroMQ
(``ZMQ_USE_FD``); fresh connections are then answered by either, a
connection stays with the one that accepted it, and a steering program sends
every new connection to one socket of the group.
"""

from __future__ import annotations

import contextlib
import os
import socket

import gevent
import pytest
import zerorpc

from expertd.rpc_server import transport
from expertd.rpc_server.transport import reuseport
from tests.conftest import free_port
from tests.unit.rpc_server.conftest import client


def labelled(label: str) -> transport.Server:
    """A server whose one method says which server answered."""
    return transport.Server({"who": lambda: label}, name=label)


@contextlib.contextmanager
def shared(endpoint: str, *steer: int | None):
    """One running server per ``steer`` entry, all bound to ``endpoint`` through reuse-port sockets."""
    servers, tasks = [], []
    try:
        for i, index in enumerate(steer):
            server = labelled(f"s{i}")
            reuseport.bind_shared(server, endpoint, index)
            servers.append(server)
            tasks.append(gevent.spawn(server.run))
        yield servers
    finally:
        for server, task in zip(servers, tasks):
            server.stop()
            task.kill()
            server.close()


def answers(endpoint: str, connections: int) -> list[str]:
    """Which server answered each of ``connections`` fresh connections."""
    seen = []
    for _ in range(connections):
        with client(endpoint, timeout=3) as c:
            seen.append(c.who())
    return seen


def test_tcp_address():
    assert reuseport.tcp_address("tcp://127.0.0.1:4242") == ("127.0.0.1", 4242)
    assert reuseport.tcp_address("tcp://*:4242") == ("0.0.0.0", 4242)
    assert reuseport.tcp_address("tcp://[::1]:4242") == ("::1", 4242)
    for bad in ("ipc:///tmp/x", "tcp://127.0.0.1", "tcp://:4242"):
        with pytest.raises(ValueError):
            reuseport.tcp_address(bad)


def test_a_port_held_without_reuseport_cannot_be_shared():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    plain = labelled("plain")
    plain.bind(endpoint)  # libzmq's own listener: SO_REUSEADDR only
    try:
        with pytest.raises(OSError):
            reuseport.reuseport_listener("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))
    finally:
        plain.close()


def test_two_servers_share_one_port_and_the_kernel_spreads_connections():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with shared(endpoint, None, None):
        seen = answers(endpoint, 24)
    assert set(seen) == {"s0", "s1"}, seen  # all 24 on one: a 2 ** -23 chance


def test_a_connection_stays_with_the_server_that_accepted_it():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with shared(endpoint, None, None), client(endpoint) as c:
        first = c.who()
        assert all(c.who() == first for _ in range(20))


def test_steering_sends_every_new_connection_to_one_socket_and_unbind_hands_the_port_over():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with shared(endpoint, None, 1) as (old, new):
        assert set(answers(endpoint, 10)) == {"s1"}  # the newest steers to itself
        reuseport.unbind(new, endpoint)
        gevent.sleep(0.05)
        assert set(answers(endpoint, 5)) == {"s0"}  # the group's hash falls back to the rest


def test_unbind_stops_new_connections_to_a_lone_server():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with shared(endpoint, None) as (only,):
        assert answers(endpoint, 1) == ["s0"]
        reuseport.unbind(only, endpoint)
        gevent.sleep(0.05)
        with client(endpoint, timeout=0.5) as c, pytest.raises(zerorpc.TimeoutExpired):
            c.who()


def test_one_inherited_listener_is_shared_by_two_servers_the_gunicorn_way():
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    servers = [labelled("s0"), labelled("s1")]
    tasks = []
    try:
        for server in servers:
            reuseport.bind_inherited(server, endpoint, os.dup(listener.fileno()))
            tasks.append(gevent.spawn(server.run))
        listener.close()  # the parent's copy: the servers' copies keep the socket open
        assert set(answers(endpoint, 24)) == {"s0", "s1"}
        reuseport.unbind(servers[0], endpoint)
        gevent.sleep(0.05)
        assert set(answers(endpoint, 5)) == {"s1"}
    finally:
        for server, task in zip(servers, tasks):
            server.stop()
            task.kill()
            server.close()
