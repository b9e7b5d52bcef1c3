"""Tell systemd how the server stands (``sd_notify``), for units of ``Type=notify``.

systemd passes the path of a datagram socket in ``NOTIFY_SOCKET``; the service
sends newline-separated ``KEY=VALUE`` states there: ``READY=1`` once it answers
calls, ``STOPPING=1`` when it starts to drain, ``RELOADING=1`` then ``READY=1``
around a reload, ``STATUS=...`` for ``systemctl status``. Without
``NOTIFY_SOCKET`` (not under systemd) every call is a no-op. The protocol is a
single ``sendto`` on an ``AF_UNIX`` socket (sd_notify(3)); an address starting
with ``@`` is in the abstract namespace.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping

log = logging.getLogger("expertd.sdnotify")

#: The environment variable systemd sets for ``Type=notify`` services.
NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The socket address to notify (abstract ``@name`` as ``\\0name``), or ``None``."""
    address = (os.environ if environ is None else environ).get(NOTIFY_SOCKET_ENV, "")
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None  # unset, or a kind this server does not speak (vsock:...)


def notify(*states: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; whether it was sent.

    A failure is logged, never raised: a server that cannot tell systemd it is
    ready still serves (systemd then reports the start as timed out).
    """
    address = notify_address(environ)
    if address is None or not states:
        return False
    message = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("could not notify systemd at %s (%s); it will not see this server as %s",
                    address.replace("\0", "@"), exc.strerror or exc, " ".join(states))
        return False
    return True


def ready(status: str) -> bool:
    """``READY=1`` with a status line: the server answers calls from now on."""
    return notify("READY=1", f"STATUS={status}")


def stopping(status: str) -> bool:
    """``STOPPING=1``: the server drains its calls, then exits."""
    return notify("STOPPING=1", f"STATUS={status}")


def reloading(status: str) -> bool:
    """``RELOADING=1``: a reload began (``ready`` again once it is done)."""
    return notify("RELOADING=1", f"STATUS={status}")
