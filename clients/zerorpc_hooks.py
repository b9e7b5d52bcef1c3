"""The client side's one use of zerorpc's internals: socket options on a ``zerorpc.Client``.

zerorpc 0.6.3 has no public API for ZeroMQ socket options (CURVE keys must be
set before ``connect``); its ``Events`` object passes ``setsockopt`` through
to the pyzmq socket. This module is the ONLY client-side module that touches
a zerorpc private attribute (server side: ``expertd.rpc_server.transport``);
``tests/unit/rpc_server/test_no_private_zerorpc.py`` checks it, and
``tests/unit/rpc_server/test_transport_zerorpc.py`` pins the behaviour.
"""

from __future__ import annotations

from typing import Any


def set_socket_option(client: Any, option: int, value: Any) -> None:
    """Set a ZeroMQ option on the socket of a zerorpc ``Client`` (or any zerorpc socket)."""
    client._events.setsockopt(option, value)
