"""The clients' health probe: what ``expertd.control`` asks a server through (a ``control.Probe``).

Process control lives in the core and speaks no protocol; ``expertd stop``,
``status``, ``reload`` and the pipe's ``--autostart`` hand it this function,
which asks ``health()`` over the clients' own connection (``clients.wire.connect``:
CURVE when keys are configured).
"""

from __future__ import annotations

from expertd import control
from expertd.clients.wire import CallTimeout, RemoteError, ServerUnavailable, connect


def health_probe(endpoint: str, timeout: float) -> dict:
    """The ``health()`` answer of the server at ``endpoint``.

    Raises ``control.NoAnswer`` when nobody answers in ``timeout`` (or health() fails).
    """
    try:
        with connect(endpoint, timeout=timeout) as connection:
            return connection.call("health")
    except (ServerUnavailable, CallTimeout, RemoteError) as exc:
        raise control.NoAnswer(str(exc)) from None
