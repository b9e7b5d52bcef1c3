"""Several processes on one TCP port: ZeroMQ on a listening socket made outside it.

What it does. ``bind_shared`` makes a listening socket with ``SO_REUSEADDR``
and ``SO_REUSEPORT`` on the worker's address and hands it to the server's
ROUTER socket with ``ZMQ_USE_FD`` (libzmq 4.3.5, bundled with pyzmq 27) before
``bind``; every worker does the same, so the port has one listener (and one
accept queue) per worker, and the kernel spreads new connections over them.
``steer_new_connections`` attaches a one-instruction classic BPF program to
the port's reuse-port group so that every new connection goes to one socket
(the newest worker, during a reload). ``unbind`` closes the listener (libzmq
also closes the connections it accepted). ``bind_inherited`` is the other
way, gunicorn's and uvicorn's: one listener made once (by a parent) whose
descriptor each worker hands to ZeroMQ the same way.

Why (measured on this machine kind, see shared/NOTES.md, except where marked):

* balancing must be per connection: a call's heartbeats and stream events
  must reach the process that runs it. A per-message ROUTER/DEALER proxy
  misroutes them (zerorpc upstream issue #172: ``unable to route event
  _zpc_hb``); a connection accepted by one process stays with it;
* two processes serving one port this way answered 20 fresh connections
  13/7. Measured again for this docstring (``bench/handover.py``, 2 bare
  workers, 40 fresh connections, 5 rounds each way, load 6-8 on 2 cores,
  worker 0/worker 1): 19/21, 20/20, 22/18, 15/25, 26/14 with a reuse-port
  listener per worker; 22/18, 24/16, 15/25, 22/18, 17/23 with one listener
  both inherited (the
  kernel wakes whichever worker waits on the shared queue). Both spread;
* (kernel semantics, not measured here) with ``SO_REUSEPORT`` each listener
  has its own accept queue, and closing it resets the connections still
  queued there; the steering exists so that a retiring worker's queue
  receives nothing before it closes. With one inherited listener the queue is
  shared and survives a worker closing its copy, so that way needs neither
  ``SO_REUSEPORT`` nor the steering;
* closing a listener also closes the connections it accepted, in both ways:
  closing one worker's listener at once, while 16 threads kept opening
  connections for one call each, lost 16, 3, 8 and 9 calls (of 600 to 2,800)
  with reuse-port listeners and 4, 0, 0 and 6 (of 2,200 to 3,400) with the
  inherited one. What protects calls is ``transport.drain.retire`` waiting for
  a moment with no call in flight; the difference between the ways is within
  this machine's noise.

So measurement does not show that ``SO_REUSEPORT`` and the steering are
needed; whether the supervisor (``rpc_server/supervisor.py``, process
control) moves to one inherited listener is its owner's call.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import TYPE_CHECKING

import zmq

from expertd.endpoint import parse_endpoint

if TYPE_CHECKING:
    from expertd.rpc_server.transport.server import Server


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


def bind_shared(server: Server, endpoint: str, steer_index: int | None = None) -> None:
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
    server.setsockopt(zmq.USE_FD, listener.detach())
    server.bind(endpoint)


def bind_inherited(server: Server, endpoint: str, fd: int) -> None:
    """Bind a zerorpc server to ``endpoint`` through an inherited listening socket ``fd``.

    ``fd`` listens on ``endpoint``'s address (made once, e.g. by a parent,
    without ``SO_REUSEPORT``). libzmq owns this descriptor from here on: pass
    each server a descriptor of its own (``os.dup``).
    """
    server.setsockopt(zmq.USE_FD, fd)
    server.bind(endpoint)


def unbind(server: Server, endpoint: str) -> None:
    """Close the server's listener: no new connections (libzmq also closes the accepted ones)."""
    server.unbind(endpoint)
