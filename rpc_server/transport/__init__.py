"""The transport: zerorpc 0.6.3 and pyzmq, as expertd serves over them.

zerorpc is unmaintained and has no public API for what expertd needs (socket
options, a dispatcher that survives hostile events, introspection on Python
3.11, drain); it gets them by using zerorpc's private attributes. This
package is the ONE server-side place that does: nothing else in rpc_server/
(nor experts/, expertd/) may touch them, which
``tests/unit/rpc_server/test_no_private_zerorpc.py`` checks, and
``tests/unit/rpc_server/test_transport_zerorpc.py`` pins the zerorpc behaviour
relied on, so that a new zerorpc release fails there first. Inside the package
only ``server``, ``dispatch`` and ``inspection`` touch zerorpc's internals; the
other modules go through ``Server``'s public methods. (On the client side the one such
module is ``expertd.clients.zerorpc_hooks``.)

One module per concept:

* ``server``: ``Server``, the ``zerorpc.Server`` subclass (errors, method table,
  public access to its socket and call pool);
* ``dispatch``: the guarded channel dispatcher (hostile events, queue overflow,
  big events);
* ``inspection``: ``_zerorpc_inspect`` and friends without ``getargspec``;
* ``limits``: message size, handshake time, open files;
* ``reuseport``: several processes on one port (``SO_REUSEPORT`` + ``ZMQ_USE_FD``);
* ``curve``: CURVE options, the ZAP handler and the handshake watch on the socket;
* ``drain``: graceful ends (SIGTERM drain, reload retire).
"""

from __future__ import annotations

from expertd.rpc_server.transport.curve import CurveGuard
from expertd.rpc_server.transport.drain import drain, retire
from expertd.rpc_server.transport.limits import limit_socket, raise_open_file_limit
from expertd.rpc_server.transport.reuseport import bind_shared, tcp_address
from expertd.rpc_server.transport.server import Server

__all__ = ["CurveGuard", "Server", "bind_shared", "drain", "limit_socket", "make_server",
           "raise_open_file_limit", "retire", "tcp_address"]


def make_server(methods: dict, name: str, heartbeat: float, max_message_bytes: int,
                handshake_timeout_ms: float) -> Server:
    """A ``Server`` for ``methods`` with the per-message and handshake limits set (not bound)."""
    server = Server(methods, name=name, heartbeat=heartbeat)
    limit_socket(server, max_message_bytes, handshake_timeout_ms)
    return server
