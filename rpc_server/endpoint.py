"""Check, before any model loads, that the server will be able to bind its endpoint.

ZeroMQ only says "Address already in use" when the real socket binds, which
used to happen after every expert had loaded (tens of seconds), as a long
``ZMQError`` traceback. ``check_bindable`` answers in milliseconds with one
sentence: a malformed endpoint, an unknown host, or a port already taken
(a plain socket is bound and released to test it, with the same
``SO_REUSEADDR`` that libzmq sets). A race with another process remains
possible; the server then reports the real bind's error in one line too.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


class EndpointError(ValueError):
    """The endpoint cannot be served; the message says why and what to do."""


def check_bindable(endpoint: str) -> None:
    """Raise ``EndpointError`` if ``endpoint`` is malformed or cannot be bound now."""
    transport, sep, address = endpoint.partition("://")
    if not sep or not address:
        raise EndpointError(f"endpoint {endpoint!r} must look like tcp://HOST:PORT "
                            f"(e.g. tcp://127.0.0.1:4242) or ipc:///path/to/socket")
    if transport == "tcp":
        _check_tcp(endpoint, address)
    elif transport == "ipc":
        directory = Path(address).parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise EndpointError(f"cannot serve on {endpoint}: directory {directory} does not "
                                f"exist or is not writable")
    elif transport not in ("inproc", "pgm", "epgm", "tipc", "vmci", "ws", "wss"):
        raise EndpointError(f"endpoint {endpoint!r}: unknown transport {transport!r} "
                            f"(use tcp://HOST:PORT or ipc:///path)")


def tcp_host_port(address: str) -> tuple[str, str]:
    """``"127.0.0.1:4242"`` -> ``("127.0.0.1", "4242")``; IPv6 in brackets."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, ""
    return host.strip("[]"), port


def _check_tcp(endpoint: str, address: str) -> None:
    host, port = tcp_host_port(address)
    if not host or not port:
        raise EndpointError(f"endpoint {endpoint!r} needs a host and a port: tcp://HOST:PORT "
                            f"(e.g. tcp://127.0.0.1:4242)")
    if port in ("*", "0"):
        return  # an ephemeral port: nothing to collide with
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(f"endpoint {endpoint!r}: port {port!r} must be a number "
                            f"from 1 to 65535")
    try:
        infos = socket.getaddrinfo(None if host == "*" else host, int(port),
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        if _is_interface(host):
            return  # ZeroMQ binds interface names (eth0); the real bind will tell
        raise EndpointError(f"cannot serve on {endpoint}: unknown host {host!r} "
                            f"({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise EndpointError(_bind_failure(endpoint, exc)) from None


def _is_interface(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _bind_failure(endpoint: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return (f"cannot serve on {endpoint}: the port is already in use (another expertd? "
                f"`expertd status --endpoint {endpoint}` tells; `expertd stop` stops it), or "
                f"pick another with --bind")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot serve on {endpoint}: that address is not one of this machine's"
    if exc.errno == errno.EACCES:
        return f"cannot serve on {endpoint}: permission denied (ports below 1024 need root)"
    return f"cannot serve on {endpoint}: {exc.strerror or exc}"
