"""CurveZMQ on the server's socket: the CURVE options, the ZAP handler, the handshake watch.

The policy (which key files, which clients, when to refuse to start) is
``rpc_server.security``; this module only puts it on the ZeroMQ socket of a
``transport.Server``:

* ``CURVE_SERVER`` and the secret key on the ROUTER socket, before ``bind``;
* with authorized client keys, a ZAP handler (RFC 27): a REP socket on
  ``inproc://zeromq.zap.01`` in the server's own ZeroMQ context, answered
  from a greenlet (pyzmq's ``ThreadAuthenticator`` runs asyncio in a thread;
  there is no gevent one);
* a native thread that reads the socket's monitor events, so that handshakes
  that fail before ZAP (no CURVE, a wrong server key) are reported with the
  peer's address.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Callable, Protocol

import gevent
import zmq
from zmq.utils import monitor as zmq_monitor
from zmq.utils import z85

if TYPE_CHECKING:
    from expertd.rpc_server.transport.server import Server

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"expertd"

HANDSHAKE_REASONS = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "it does not use CURVE (no client keys set)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "CURVE handshake failed (wrong server public key?)",
}


class Refusals(Protocol):
    """Where refused handshakes are reported (``security.RefusalLog``)."""

    def refused(self, host: str, kind: str, reason: str) -> None:
        """One refused handshake from ``host``."""

    def flush(self, force: bool = False) -> None:
        """Log the counts of the window that ended."""


class CurveGuard:
    """CURVE, ZAP and the handshake watch on one server socket; ``close`` stops them."""

    def __init__(self, server: Server, secret_key: bytes, refusals: Refusals,
                 authorize: Callable[[bytes], str | None] | None = None,
                 authorized_in: str = "the authorized keys") -> None:
        """Set the options on ``server`` (before ``bind``) and start the handlers.

        ``authorize(raw_public_key)`` names the key file that allows a client
        (``None``: refused, for the reason "client key K is not in ...
        ``authorized_in``"); without it any CURVE client may connect.
        """
        self.refusals = refusals
        self._authorize = authorize
        self._authorized_in = authorized_in
        self._stop = threading.Event()
        self._greenlets: list = []
        self._threads: list = []
        self._sockets: list = []
        context = server.zmq_context
        if authorize is not None:
            zap = context.socket(zmq.REP)
            zap.linger = 0
            zap.bind(ZAP_ENDPOINT)
            self._sockets.append(zap)
            self._greenlets.append(gevent.spawn(self._answer_zap, zap))
        self._watch_handshakes_in_thread(server.zmq_socket, context)
        server.setsockopt(zmq.CURVE_SERVER, 1)
        server.setsockopt(zmq.CURVE_SECRETKEY, secret_key)
        server.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

    def _answer_zap(self, zap) -> None:
        """ZAP (RFC 27): allow a CURVE client whose public key is authorized."""
        while True:
            try:
                frames = zap.recv_multipart()
            except zmq.ZMQError:
                return
            version, request_id, _domain, address, _identity, mechanism = frames[:6]
            credentials = frames[6:]
            name = None
            if mechanism == b"CURVE" and credentials:
                name = self._authorize(credentials[0])
            if name is not None:
                reply = [version, request_id, b"200", b"OK", name.encode(), b""]
            else:
                key = z85.encode(credentials[0]).decode() if credentials else "none"
                self.refusals.refused(address.decode(errors="replace") or "unknown peer", "zap",
                                      f"client key {key} is not in {self._authorized_in}")
                reply = [version, request_id, b"400", b"client key not authorized", b"", b""]
            try:
                zap.send_multipart(reply)
            except zmq.ZMQError:
                return

    def _watch_handshakes_in_thread(self, server_socket, context) -> None:
        """Log handshakes that fail before ZAP (no CURVE, or a wrong server key).

        Monitor events name the listening endpoint, not the peer: the peer is read
        from the fd of the ACCEPTED event, and a failure belongs to the connection
        whose DISCONNECTED event follows it (one I/O thread emits both). A native
        thread reads the events at once, while the fd is still open (a greenlet
        would often be too late: a failed handshake closes it within microseconds).
        """
        address = f"inproc://expertd.handshakes.{id(self)}"
        server_socket.monitor(address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
                              | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        plain = zmq.Context.shadow(context.underlying)  # blocking sockets, same context
        monitor = plain.socket(zmq.PAIR)
        monitor.connect(address)
        thread = threading.Thread(target=self._watch_handshakes, args=(monitor,),
                                  name="expertd-handshakes", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch_handshakes(self, monitor) -> None:
        peers: dict[int, str] = {}
        failure: tuple[str, str] | None = None
        try:
            while not self._stop.is_set():
                if not monitor.poll(200):
                    self.refusals.flush()  # a window's counts are logged even when quiet
                    continue
                event = zmq_monitor.recv_monitor_message(monitor)
                kind, value = event["event"], event["value"]
                if kind == zmq.EVENT_ACCEPTED:
                    peers[value] = peer_of_fd(value)
                elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    failure = (str(value),
                               HANDSHAKE_REASONS.get(value, f"ZMTP protocol error {value:#x}"))
                elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                    failure = ("detail", f"handshake failed ({os.strerror(value) if value else 'no detail'})")
                elif kind == zmq.EVENT_DISCONNECTED:
                    host = peers.pop(value, "unknown peer")
                    if failure is not None:
                        self.refusals.refused(host, *failure)
                    failure = None
        except zmq.ZMQError:
            pass
        finally:
            monitor.close(linger=0)

    def close(self) -> None:
        """Stop the ZAP handler and the handshake watch; log the refusals not yet logged."""
        self._stop.set()
        for thread in self._threads:
            thread.join(1.0)
        self.refusals.flush(force=True)
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        for sock in self._sockets:
            sock.close()


def peer_of_fd(fd: int) -> str:
    """The remote host of a connected socket fd (best effort: ``unknown peer``)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return "unknown peer"
    try:
        peer = sock.getpeername()
    except OSError:
        return "unknown peer"
    finally:
        sock.detach()  # the fd belongs to libzmq
    if isinstance(peer, tuple):
        return str(peer[0])
    return peer or "local peer"
