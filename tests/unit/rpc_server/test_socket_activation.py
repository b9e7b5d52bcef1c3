"""rpc_server/socket_activation.py on real sockets placed where systemd would put them."""

from __future__ import annotations

import os
import socket

import pytest

from expertd.rpc_server.socket_activation import (SocketActivationError, handed_listener,
                                                  serving_endpoint, take_listen_fds,
                                                  tcp_listener_endpoint)

#: Consecutive descriptors standing in for systemd's 3, 4, ... (free in a test process).
START = 200


@pytest.fixture
def placed():
    """Put sockets at START, START+1, ... (as systemd does from 3); close them after."""
    used: list[int] = []

    def place(*socks: socket.socket) -> None:
        for offset, sock in enumerate(socks):
            os.dup2(sock.fileno(), START + offset, inheritable=True)
            used.append(START + offset)
            sock.close()

    yield place
    for fd in used:
        try:
            os.close(fd)
        except OSError:
            pass


def listening(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on a free port of ``host``."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(8)
    return sock


def handed_env(count: int, pid: int | None = None, names: str | None = None) -> dict:
    """The variables systemd sets."""
    env = {"LISTEN_FDS": str(count), "LISTEN_PID": str(os.getpid() if pid is None else pid),
           "OTHER": "kept"}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    return env


def test_takes_the_handed_descriptors_with_their_names_and_unsets_the_variables(placed):
    placed(listening(), listening())
    env = handed_env(2, names="rpc:spare")
    fds = take_listen_fds(env, start=START)
    assert [(f.fd, f.name) for f in fds] == [(START, "rpc"), (START + 1, "spare")]
    assert env == {"OTHER": "kept"}  # a child (a worker) does not take them again
    assert not os.get_inheritable(START)  # reaches a child only when passed on purpose


def test_variables_meant_for_another_process_are_ignored_and_removed(placed):
    placed(listening())
    env = handed_env(1, pid=os.getpid() + 1)
    assert take_listen_fds(env, start=START) == []
    assert env == {"OTHER": "kept"}


def test_no_variables_no_descriptors():
    env = {"OTHER": "kept"}
    assert take_listen_fds(env, start=START) == [] and handed_listener(env, start=START) is None


def test_malformed_count_says_what_it_is():
    with pytest.raises(SocketActivationError, match="LISTEN_FDS='two'"):
        take_listen_fds(handed_env(1) | {"LISTEN_FDS": "two"}, start=START)


def test_handed_listener_is_the_socket_and_its_address(placed):
    sock = listening()
    port = sock.getsockname()[1]
    placed(sock)
    assert handed_listener(handed_env(1), start=START) == (START, f"tcp://127.0.0.1:{port}")
    os.fstat(START)  # still open: ZeroMQ takes it from here


def test_ipv6_listener_endpoint_is_bracketed(placed):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sock = listening("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here ({exc})")
    placed(sock)
    assert tcp_listener_endpoint(START).startswith("tcp://[::1]:")


def test_more_than_one_socket_is_refused_with_the_fix(placed):
    placed(listening(), listening())
    with pytest.raises(SocketActivationError, match="single ListenStream="):
        handed_listener(handed_env(2), start=START)


@pytest.mark.parametrize("make", [
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),  # ListenDatagram=
    lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),  # not listening
], ids=["datagram", "not-listening"])
def test_a_socket_that_is_not_a_tcp_listener_is_refused(placed, make):
    placed(make())
    with pytest.raises(SocketActivationError, match="not a listening TCP socket"):
        tcp_listener_endpoint(START)


def test_a_descriptor_that_is_not_a_socket_is_refused(tmp_path):
    with open(tmp_path / "file", "w") as file:
        with pytest.raises(SocketActivationError, match="not a socket"):
            tcp_listener_endpoint(file.fileno())


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1:4242", "tcp://*:4242", "tcp://localhost:4242"])
def test_serving_endpoint_accepts_a_bind_naming_the_socket(bind):
    assert serving_endpoint(bind, "tcp://127.0.0.1:4242") == "tcp://127.0.0.1:4242"


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1:4243", "tcp://10.0.0.1:4242"])
def test_serving_endpoint_refuses_another_address_naming_both(bind):
    with pytest.raises(SocketActivationError) as error:
        serving_endpoint(bind, "tcp://127.0.0.1:4242")
    assert bind in str(error.value) and "ListenStream=" in str(error.value)
