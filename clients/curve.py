"""Client side of CurveZMQ: keys from the environment and an encrypted connection.

A client is configured by two files, named by environment variables, so a
pipeline needs no extra flags:

* ``EXPERTD_SERVER_KEY``: the server's public key (``keys/server.key``);
* ``EXPERTD_CLIENT_KEY``: this client's key pair (``keys/clients/NAME.key_secret``).
  Without it the client makes a throwaway key pair, which a server with
  ``--authorized-keys`` refuses.

``clients.wire.connect`` hands over to ``CurveConnection`` (pyzmq, a DEALER
socket) only when ``EXPERTD_SERVER_KEY`` is set, so a stage without keys never
imports pyzmq. ``CurveConnection`` has ``clients.wire.Connection``'s interface
and errors; ``secure_zerorpc`` puts the same keys on a stock ``zerorpc`` socket.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Any

import zmq

from expertd.clients.calls import Calls, ServerUnavailable
from expertd.clients.zerorpc_hooks import set_socket_option
from expertd.endpoint import parse_endpoint
from expertd.keys import read_certificate, valid_key

SERVER_KEY_ENV = "EXPERTD_SERVER_KEY"
CLIENT_KEY_ENV = "EXPERTD_CLIENT_KEY"


class KeyFileError(ServerUnavailable):
    """A key file named by the environment cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class ClientKeys:
    """The server's public key and this client's key pair, all Z85 bytes."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "ClientKeys | None":
        """Keys from ``EXPERTD_SERVER_KEY``/``EXPERTD_CLIENT_KEY``, or None if not set."""
        environ = os.environ if environ is None else environ
        server_file = environ.get(SERVER_KEY_ENV)
        if not server_file:
            if environ.get(CLIENT_KEY_ENV):
                raise KeyFileError(f"{CLIENT_KEY_ENV} is set but {SERVER_KEY_ENV} is not: "
                                   f"set it to the server's public key file (keys/server.key)")
            return None
        server_public, _ = _read(server_file, SERVER_KEY_ENV, need_secret=False)
        client_file = environ.get(CLIENT_KEY_ENV)
        if client_file:
            public, secret = _read(client_file, CLIENT_KEY_ENV, need_secret=True)
        else:
            public, secret = zmq.curve_keypair()
        return cls(server_public, public, secret)

    def socket_options(self) -> dict[int, bytes]:
        """The ZeroMQ options that make a client socket speak CURVE to this server."""
        return {zmq.CURVE_SERVERKEY: self.server_public, zmq.CURVE_PUBLICKEY: self.public,
                zmq.CURVE_SECRETKEY: self.secret}


def _read(path: str, variable: str, need_secret: bool) -> tuple[bytes, bytes]:
    try:
        public, secret = read_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"{variable}={path}: cannot read it ({exc.strerror}); "
                           f"make keys with `expertd keygen`") from None
    if not valid_key(public):
        raise KeyFileError(f"{variable}={path}: no valid public-key (40 Z85 characters) in "
                           f"it; is it a file from `expertd keygen`?")
    if need_secret and not valid_key(secret):
        raise KeyFileError(f"{variable}={path} holds only a public key; name the "
                           f"*.key_secret file `expertd keygen` wrote for this client")
    return public, secret


def monitor_event(monitor) -> int:
    """The event number of the next monitor message (``zmq.utils.monitor`` imports asyncio)."""
    frames = monitor.recv_multipart()
    return struct.unpack("=H", frames[0][:2])[0]


def secure_zerorpc(client: Any, keys: ClientKeys | None = None) -> bool:
    """Put CURVE keys (from the environment unless given) on a zerorpc socket before ``connect``.

    Returns False, and changes nothing, when no keys are configured.
    """
    keys = keys or ClientKeys.from_env()
    if keys is None:
        return False
    for option, value in keys.socket_options().items():
        set_socket_option(client, option, value)
    return True


HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                    | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED)


class CurveConnection(Calls):
    """An encrypted connection to a zerorpc server, with ``clients.wire.Connection``'s interface."""

    def __init__(self, endpoint: str, keys: ClientKeys, timeout: float = 30.0,
                 heartbeat: float = 5.0) -> None:
        """Connect and wait for the CURVE handshake; ``ServerUnavailable`` says why it failed."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._replies: dict[str, list] = {}
        self._pending: set[str] = set()
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.linger = 0
        for option, value in keys.socket_options().items():
            self._sock.setsockopt(option, value)
        self._monitor = self._sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._lost: str | None = None
        try:
            parse_endpoint(endpoint)  # EndpointError (a ValueError): malformed
            try:
                self._sock.connect(endpoint)
            except zmq.ZMQError as exc:  # e.g. a host name libzmq cannot resolve
                raise ServerUnavailable(f"cannot connect to {endpoint}: {exc}") from None
            self._await_handshake(time.monotonic() + min(timeout, 5.0))
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _await_handshake(self, until: float) -> None:
        """Return on a CURVE handshake, else raise ``ServerUnavailable`` saying what happened."""
        failed = None
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0 or not self._monitor.poll(remaining * 1000):
                raise ServerUnavailable(failed or f"no CURVE handshake from {self.endpoint}")
            kind = monitor_event(self._monitor)
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
            if kind == zmq.EVENT_CONNECT_RETRIED:
                raise ServerUnavailable(failed or f"cannot connect to {self.endpoint}")
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise ServerUnavailable(
                    f"{self.endpoint} refused this client's key: put its public key in the "
                    f"server's authorized-keys directory, or set {CLIENT_KEY_ENV} to a key "
                    f"pair that is there")
            if kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                        zmq.EVENT_DISCONNECTED):
                failed = (f"no CURVE handshake with {self.endpoint}: is {SERVER_KEY_ENV} this "
                          f"server's public key, and does the server run with "
                          f"--curve-secret-key?")

    def close(self) -> None:
        """Close the socket (the spans of calls left unanswered end)."""
        self.end_unanswered_spans()
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def _check_monitor(self) -> None:
        """A disconnect loses the calls in flight: say so, as ``wire.Connection`` does."""
        while self._monitor.poll(0):
            kind = monitor_event(self._monitor)
            if kind == zmq.EVENT_DISCONNECTED:
                self._lost = f"connection to {self.endpoint} lost"
        if self._lost:
            raise ServerUnavailable(self._lost)

    def _wait_for_replies(self, until: float) -> None:
        ready = dict(self._poller.poll(max(0.0, until - time.monotonic()) * 1000))
        while self._sock.poll(0):
            self._file_reply(self._sock.recv_multipart()[-1])
        if self._monitor in ready:
            self._check_monitor()

    def _send_payload(self, payload: bytes) -> None:
        self._check_monitor()
        try:
            self._sock.send_multipart([b"", payload], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise ServerUnavailable(f"connection to {self.endpoint} lost: {exc}") from None

