"""Listening sockets handed over by systemd (socket activation, sd_listen_fds(3)).

With an ``expertd.socket`` unit, systemd binds the port itself and starts
the service with the listening sockets open as descriptors 3, 4, ... and
three environment variables: ``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the
process they are meant for) and ``LISTEN_FDNAMES`` (``:``-separated names,
optional). The port then stays bound across restarts: a client that connects
while the server restarts waits in the socket's accept queue instead of being
refused. ``systemd-socket-activate`` does the same by hand (and in the tests).

``take_listen_fds`` is ``sd_listen_fds(unset_environment=1)``: the variables
are for this process only (``LISTEN_PID`` must be ours) and are removed, so
a child (a worker) does not take them for its own; the descriptors get
``FD_CLOEXEC`` so that they reach a child only when passed on purpose.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import MutableMapping

#: The first descriptor systemd passes (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START = 3
LISTEN_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class SocketActivationError(ValueError):
    """The handed-over sockets cannot be served on (the message says what to change)."""


@dataclass(frozen=True)
class ListenFd:
    """One descriptor systemd handed over, and its name (``FileDescriptorName=``)."""

    fd: int
    name: str


def take_listen_fds(environ: MutableMapping[str, str] | None = None, pid: int | None = None,
                    start: int = LISTEN_FDS_START) -> list[ListenFd]:
    """The descriptors handed to this process (``[]`` if none), the variables removed.

    ``LISTEN_PID`` naming another process (the variables were inherited from a
    parent they were meant for) counts as none. A malformed ``LISTEN_FDS``
    raises ``SocketActivationError``. ``environ``, ``pid`` and ``start``
    default to this process's (tests pass their own).
    """
    environ = os.environ if environ is None else environ
    count, listen_pid = environ.get("LISTEN_FDS"), environ.get("LISTEN_PID")
    names = environ.get("LISTEN_FDNAMES")
    for key in LISTEN_ENV:
        environ.pop(key, None)
    if count is None:
        return []
    if listen_pid is not None and listen_pid.strip() != str(os.getpid() if pid is None else pid):
        return []
    try:
        number = int(count)
    except ValueError:
        raise SocketActivationError(f"LISTEN_FDS={count!r} is not a number of descriptors "
                                    "(set by systemd's socket activation)") from None
    if number < 0:
        raise SocketActivationError(f"LISTEN_FDS={count!r} is negative")
    labels = names.split(":") if names else []
    fds = []
    for offset in range(number):
        fd = start + offset
        os.set_inheritable(fd, False)  # OSError EBADF: not open, as systemd promised
        fds.append(ListenFd(fd, labels[offset] if offset < len(labels) else "unknown"))
    return fds


def tcp_listener_endpoint(fd: int) -> str:
    """``tcp://HOST:PORT`` of a listening TCP socket ``fd`` (``SocketActivationError`` otherwise)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketActivationError(f"descriptor {fd} handed over by systemd is not a socket "
                                    f"({exc.strerror})") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family not in (socket.AF_INET, socket.AF_INET6) \
                or sock.type != socket.SOCK_STREAM or not listening:
            raise SocketActivationError(
                f"descriptor {fd} handed over by systemd is not a listening TCP socket: "
                "use ListenStream=HOST:PORT in expertd.socket")
        host, port = sock.getsockname()[:2]
    finally:
        sock.detach()  # the descriptor stays open, for ZeroMQ
    return f"tcp://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"tcp://{host}:{port}"


def handed_listener(environ: MutableMapping[str, str] | None = None, pid: int | None = None,
                    start: int = LISTEN_FDS_START) -> tuple[int, str] | None:
    """The one listening TCP socket handed over, as ``(fd, endpoint)``; ``None`` if none.

    expertd serves one endpoint: more than one socket raises
    ``SocketActivationError`` naming the fix.
    """
    fds = take_listen_fds(environ, pid, start)
    if not fds:
        return None
    if len(fds) > 1:
        raise SocketActivationError(
            f"systemd handed over {len(fds)} sockets ({', '.join(f.name for f in fds)}); "
            "expertd serves one: keep a single ListenStream= in expertd.socket")
    return fds[0].fd, tcp_listener_endpoint(fds[0].fd)


def serving_endpoint(bind: str, handed: str) -> str:
    """The endpoint to serve on: ``handed`` (the socket's own address), if ``bind`` names it.

    ``bind`` (``--bind`` / ``EXPERTD_ENDPOINT``) must name the handed socket's
    port, and its host unless it is ``*``; otherwise clients and health checks
    configured from it would look elsewhere, so this raises
    ``SocketActivationError`` naming both.
    """
    from expertd.endpoint import parse_endpoint

    wanted, actual = parse_endpoint(bind, binding=True), parse_endpoint(handed, binding=True)
    same_host = wanted.host in ("*", actual.host) or (
        wanted.host == "localhost" and actual.host in ("127.0.0.1", "::1"))
    if wanted.transport != "tcp" or wanted.port != actual.port or not same_host:
        raise SocketActivationError(
            f"systemd handed over a socket listening on {handed}, but the endpoint to serve is "
            f"{bind}: make ListenStream= in expertd.socket and --bind (or EXPERTD_ENDPOINT) "
            "name the same address")
    return handed
