"""A lean zerorpc client for short-lived processes: ZMTP 3 over a plain socket.

``import zerorpc`` costs a pipe stage ~50 ms (gevent, pyzmq); this module
costs about 1 ms (its msgpack is ``clients.lean_msgpack``'s). It speaks exactly
what a zerorpc request/reply needs:

* ZMTP 3.0 (RFC 23) as a DEALER with the NULL mechanism: a 64-byte greeting,
  a READY command, then frames (flags byte, 1- or 8-byte length, body);
* zerorpc events: msgpack ``[header, name, args]`` sent as ``["", event]``;
  a header is ``{"message_id", "v": 3}`` (plus ``"response_to"`` in replies);
* replies ``OK [result]`` and ``ERR [name, message, traceback]``; ``_zpc_hb``
  heartbeats are answered on every channel that waits longer than the
  heartbeat interval, so long calls are not cut off by the server.

Several calls may be in flight on one connection (``send`` then ``receive``),
and a client may spread its calls over several connections: ``peers`` are the
other connections of the same client, whose waiting calls get their heartbeats
while this one waits. Anything richer (streams, servers) is for the real zerorpc package.
The events and the call bookkeeping are ``clients.calls`` (shared with ``clients.curve``).
"""

from __future__ import annotations

import _socket  # the C module under ``socket``, whose enums cost a stage ~2 ms to build
import os
import select
import time

# The protocol's errors and helpers are part of this module's interface (clients import them from here).
from expertd.clients.calls import (Calls, CallTimeout, RemoteError, ServerUnavailable, pack_array,
                                   request_payload)
from expertd.endpoint import parse_endpoint

__all__ = ["CallTimeout", "Calls", "Connection", "RemoteError", "ServerUnavailable", "connect",
           "open_socket", "pack_array", "request_payload"]

GREETING = (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
            + b"\x00" + b"\x00" * 31)
FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 1, 2, 4


def _frame(body: bytes, flags: int = 0) -> bytes:
    if len(body) > 255:
        return bytes((flags | FLAG_LONG,)) + len(body).to_bytes(8, "big") + body
    return bytes((flags, len(body))) + body


def _ready_command() -> bytes:
    prop = b"Socket-Type"
    body = b"\x05READY" + bytes([len(prop)]) + prop + (6).to_bytes(4, "big") + b"DEALER"
    return _frame(body, FLAG_COMMAND)


def _is_ipv4(host: str) -> bool:
    try:
        _socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def open_socket(endpoint: str, timeout: float) -> _socket.socket:
    """Connect a plain socket to a ``tcp://host:port`` or ``ipc://path`` endpoint.

    A malformed endpoint raises ``EndpointError`` (a ``ValueError``); one where
    nothing answers, ``ServerUnavailable``.
    """
    parsed = parse_endpoint(endpoint)
    try:
        if parsed.transport == "tcp":
            host, port = parsed.host, parsed.port
            if _is_ipv4(host):  # a literal needs no resolver (nor its idna codec import)
                sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect((host, port))
                except OSError:
                    sock.close()
                    raise
            else:
                import socket  # a name to resolve: the full module

                sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        else:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(parsed.path)
            except OSError:
                sock.close()
                raise
    except OSError as exc:
        raise ServerUnavailable(f"cannot connect to {endpoint}: {exc}") from None
    return sock


def connect(endpoint: str, timeout: float = 30.0, heartbeat: float = 5.0) -> "Connection":
    """Open a connection to ``endpoint``: the one way clients make one (keys, when set, pick
    the secure transport here)."""
    if os.environ.get("EXPERTD_SERVER_KEY") or os.environ.get("EXPERTD_CLIENT_KEY"):
        from expertd.clients.curve import ClientKeys, CurveConnection  # pyzmq: only with keys

        return CurveConnection(endpoint, ClientKeys.from_env(), timeout=timeout,
                               heartbeat=heartbeat)
    try:
        return Connection(endpoint, timeout=timeout, heartbeat=heartbeat)
    except ServerUnavailable as exc:
        if "handshake" not in str(exc):
            raise
        raise ServerUnavailable(f"{exc} (if the server encrypts with CURVE, set "
                                f"EXPERTD_SERVER_KEY and EXPERTD_CLIENT_KEY)") from None


class Connection(Calls):
    """One ZMTP connection to a zerorpc server, for request/reply calls."""

    def __init__(self, endpoint: str, timeout: float = 30.0, heartbeat: float = 5.0) -> None:
        """Connect and handshake; raises ``ServerUnavailable`` if nobody answers."""
        self.endpoint = endpoint
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._sock = open_socket(endpoint, timeout=min(timeout, 5.0))
        self._buf = bytearray()
        self._replies: dict[str, list] = {}
        self._pending: set[str] = set()  # ids of requests still waiting for a reply
        try:
            self._sock.sendall(GREETING + _ready_command())
            greeting = self._read_exact(64, time.monotonic() + min(timeout, 5.0))
        except (OSError, CallTimeout) as exc:
            self.close()
            raise ServerUnavailable(f"no ZMTP handshake from {endpoint}: {exc}") from None
        if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
            self.close()
            raise ServerUnavailable(f"{endpoint} does not speak ZMTP 3")

    def close(self) -> None:
        """Close the socket (the spans of calls left unanswered end)."""
        self.end_unanswered_spans()
        try:
            self._sock.close()
        except OSError:
            pass

    def fileno(self) -> int:
        """The socket's descriptor, for ``selectors``: readable means ``collect`` finds replies."""
        return self._sock.fileno()

    def collect(self) -> set[str]:
        """Read what has arrived, waiting at most a millisecond; the ids ``receive`` now returns at once."""
        self._wait_for_replies(time.monotonic() + 0.001)
        return set(self._replies)

    # -- framing --------------------------------------------------------------

    def _send_payload(self, payload: bytes) -> None:
        try:
            self._sock.sendall(_frame(b"", FLAG_MORE) + _frame(payload))
        except OSError as exc:
            raise ServerUnavailable(f"connection to {self.endpoint} lost: {exc}") from None

    def _wait_for_replies(self, until: float) -> None:
        """Read what arrives before ``until`` and file every complete reply in it."""
        if not self._parse_messages():
            self._fill(until)
            self._parse_messages()

    def _parse_messages(self) -> bool:
        """Consume every complete message in the buffer; True if there was one."""
        found = False
        while True:
            parts, pos, buf = [], 0, self._buf
            complete = False
            while pos < len(buf):
                flags = buf[pos]
                size_len = 8 if flags & FLAG_LONG else 1
                if pos + 1 + size_len > len(buf):
                    break
                size = int.from_bytes(buf[pos + 1:pos + 1 + size_len], "big")
                start = pos + 1 + size_len
                if start + size > len(buf):
                    break
                body = bytes(buf[start:start + size])
                pos = start + size
                if flags & FLAG_COMMAND:
                    if body[1:1 + body[0]] == b"ERROR":
                        raise ServerUnavailable(f"{self.endpoint} refused the connection")
                    complete = True  # READY, PING: nothing for a DEALER to answer
                    break
                parts.append(body)
                if not flags & FLAG_MORE:
                    complete = True
                    break
            if not complete:
                return found
            del buf[:pos]
            if parts:
                found = True
                self._file_reply(parts[-1])

    def _fill(self, until: float) -> None:
        """Read whatever the socket has before ``until`` (possibly nothing)."""
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        if self.wake_fd is not None:  # a signal ends the wait (the caller decides what next)
            readable, _, _ = select.select([self._sock, self.wake_fd], [], [], remaining)
            if self._sock not in readable:
                return
            remaining = max(0.001, until - time.monotonic())
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(262144)
        except TimeoutError:  # socket.timeout
            return
        except OSError as exc:
            raise ServerUnavailable(f"connection to {self.endpoint} lost: {exc}") from None
        if not chunk:
            raise ServerUnavailable(f"{self.endpoint} closed the connection")
        self._buf += chunk

    def _read_exact(self, n: int, until: float) -> bytes:
        """Read exactly ``n`` bytes (the greeting) before ``until``."""
        while len(self._buf) < n:
            if time.monotonic() >= until:
                raise CallTimeout(f"no answer from {self.endpoint}")
            self._fill(until)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data
