"""Several processes on one TCP port: listening sockets made with ``SO_REUSEPORT``.

Each worker makes its own listening socket with ``SO_REUSEADDR`` and
``SO_REUSEPORT`` on the same address; the kernel then spreads new connections
across the workers, and each connection stays with the process that accepted
it (so zerorpc's heartbeats and streams keep working). ZeroMQ takes such a
socket through ``ZMQ_USE_FD`` (libzmq 4.3.5, bundled with pyzmq 27).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import zmq

from expertd.endpoint import parse_endpoint


def tcp_address(endpoint: str) -> tuple[str, int]:
    """``("HOST", PORT)`` of a ``tcp://HOST:PORT`` endpoint (a ``ValueError`` otherwise)."""
    parts = parse_endpoint(endpoint, binding=True)  # EndpointError (a ValueError) if malformed
    if parts.transport != "tcp" or parts.port is None:
        raise ValueError(f"--workers needs a tcp://HOST:PORT endpoint, got {endpoint!r}")
    host = parts.host
    return ("0.0.0.0" if host == "*" else host), parts.port


def reuseport_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K


def steer_new_connections(sock: socket.socket, index: int) -> None:
    """Send the port's new connections to the ``index``-th socket of its reuse-port group.

    A classic BPF program ``return index`` attached to the group (through any
    of its sockets). The kernel numbers the group's sockets in the order they
    started listening, and falls back to its usual hash for an index out of
    range, so a wrong or stale index only costs the steering, never a
    connection. A new worker started by a reload steers to itself (it is the
    newest), so that an old worker, about to close its listener, receives no
    connection it would then drop.
    """
    program = (ctypes.c_ubyte * 8).from_buffer_copy(struct.pack("HBBI", BPF_RET_K, 0, 0, index))
    fprog = struct.pack("HxxxxxxP", 1, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def bind_shared(server, endpoint: str, steer_index: int | None = None) -> None:
    """Bind a zerorpc server to ``endpoint`` through a listening socket other processes share.

    ``steer_index``: see ``steer_new_connections``. libzmq owns the descriptor
    from here on (it closes it on unbind or close).
    """
    host, port = tcp_address(endpoint)
    listener = reuseport_listener(host, port)
    if steer_index is not None:
        try:
            steer_new_connections(listener, steer_index)
        except OSError:
            pass  # no steering: the kernel's hash spreads connections as usual
    server._events.setsockopt(zmq.USE_FD, listener.detach())
    server.bind(endpoint)


def unbind(server, endpoint: str) -> None:
    """Close the server's listener: no new connections (libzmq also closes the accepted ones)."""
    server._events._socket.unbind(endpoint)
