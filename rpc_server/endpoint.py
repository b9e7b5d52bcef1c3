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

from expertd.endpoint import Endpoint, EndpointError, parse_endpoint

__all__ = ["EndpointError", "check_bindable"]


def check_bindable(endpoint: str) -> None:
    """Raise ``EndpointError`` if ``endpoint`` is malformed or cannot be bound now."""
    parsed = parse_endpoint(endpoint, binding=True)  # malformed: the parser's one line
    if parsed.transport == "tcp":
        _check_tcp(endpoint, parsed)
    elif parsed.transport == "ipc":
        directory = Path(parsed.path).parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise EndpointError(f"cannot serve on {endpoint}: directory {directory} does not "
                                f"exist or is not writable")


def _check_tcp(endpoint: str, parsed: Endpoint) -> None:
    host, port = parsed.host, parsed.port
    if port is None:
        return  # an ephemeral port: nothing to collide with
    try:
        infos = socket.getaddrinfo(None if host == "*" else host, port,
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
