"""CurveZMQ on the RPC port: encryption, client keys (ZAP) and no silent exposure.

* With a server secret key every connection is encrypted (CURVE, RFC 26).
* With an authorized-keys directory only clients whose public key is in it may
  connect: a ZAP handler (RFC 27), a REP socket on ``inproc://zeromq.zap.01`` in
  the server's own ZeroMQ context, answers each handshake from a greenlet. The
  directory is re-read whenever it changes, so adding or removing a ``*.key``
  file takes effect at the next handshake, without a restart.
* Every refused handshake is logged with the peer address: the first one from a
  host at once, the rest from that host as one count per minute (no flooding).
* Binding beyond loopback without CURVE refuses to start unless ``--insecure``.

zerorpc has no API for socket options; its ``Events`` object passes ``setsockopt``
through to the pyzmq socket (private, so zerorpc is pinned at 0.6.3).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gevent
import zmq
from zmq.utils import monitor as zmq_monitor
from zmq.utils import z85

from expertd.endpoint import parse_endpoint
from expertd.keys import read_certificate, valid_key

log = logging.getLogger("expertd.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"expertd"
KEYGEN_HINT = ("to encrypt, make keys with `expertd keygen --dir keys --client NAME`, then serve with "
               "`--curve-secret-key keys/server.key_secret --authorized-keys keys/authorized` "
               "(env EXPERTD_CURVE_SECRET_KEY, EXPERTD_AUTHORIZED_KEYS)")


class SecurityError(Exception):
    """The server's security settings cannot be used (the message says what to change)."""


def is_local_endpoint(endpoint: str) -> bool:
    """True if only this machine can reach ``endpoint`` (loopback TCP, ipc, inproc)."""
    parsed = parse_endpoint(endpoint, binding=True)
    if parsed.transport != "tcp":  # ipc, inproc
        return True
    host = parsed.host
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # "*", an interface name or a host name: assume reachable
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def read_key_file(path: Path, what: str, secret: bool) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` z85 keys from a ZeroMQ certificate file, or a clear error."""
    try:
        public, secret_key = read_certificate(path)
    except OSError as exc:
        raise SecurityError(f"{what} {path}: cannot read a ZeroMQ certificate ({exc.strerror}); "
                            f"{KEYGEN_HINT}") from None
    if public is None:
        raise SecurityError(f"{what} {path}: no public-key line, so not a ZeroMQ certificate; "
                            f"{KEYGEN_HINT}")
    if secret and not secret_key:
        raise SecurityError(f"{what} {path} holds only a public key; pass the "
                            f"*.key_secret file that `expertd keygen` wrote")
    for key in (public, secret_key):
        if key is not None and not valid_key(key):
            raise SecurityError(f"{what} {path}: a key is not 40 Z85 characters")
    return public, secret_key


class AuthorizedKeys:
    """The public keys in a directory of ``*.key`` files, re-read when the directory changes."""

    def __init__(self, directory: Path) -> None:
        """Read ``directory`` now (it must exist)."""
        self.directory = directory
        self._signature: tuple | None = None
        self._keys: dict[bytes, str] = {}  # raw 32-byte key -> file name
        if not directory.is_dir():
            raise SecurityError(f"authorized-keys directory {directory} does not exist; "
                                f"{KEYGEN_HINT}")
        self.refresh()

    def _scan(self) -> tuple:
        try:
            with os.scandir(self.directory) as entries:
                files = sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                               for e in entries if e.name.endswith(".key") and e.is_file())
        except OSError as exc:
            return ("error", str(exc))
        return tuple(files)

    def refresh(self) -> None:
        """Re-read the key files if any was added, removed or edited since the last read."""
        signature = self._scan()
        if signature == self._signature:
            return
        self._signature = signature
        keys: dict[bytes, str] = {}
        if signature and signature[0] == "error":
            log.error("cannot read authorized-keys directory %s (%s): refusing every client",
                      self.directory, signature[1])
        else:
            for name, _, _ in signature:
                try:
                    public, _ = read_key_file(self.directory / name, "authorized key", False)
                except SecurityError as exc:
                    log.error("ignoring %s", exc)
                    continue
                keys[z85.decode(public)] = name
        self._keys = keys
        log.info("authorized client keys: %d (%s)", len(keys),
                 ", ".join(sorted(keys.values())) or "none: every client is refused")

    def name_of(self, raw_key: bytes) -> str | None:
        """The file that authorizes ``raw_key`` (a 32-byte CURVE public key), or None."""
        self.refresh()
        return self._keys.get(raw_key)


class RefusalLog:
    """Logs refused handshakes: the first per host at once, the rest as a count per window."""

    def __init__(self, window: float = 60.0, max_hosts: int = 1000) -> None:
        """Aggregate repeats over ``window`` seconds, tracking at most ``max_hosts`` hosts."""
        self.window = window
        self.max_hosts = max_hosts
        self._started = time.monotonic()
        self._seen: dict[tuple, list] = {}  # (host, kind) -> [repeats, last reason]
        self._overflow = 0
        self._lock = threading.Lock()  # the ZAP greenlet and the handshake thread both report

    def refused(self, host: str, kind: str, reason: str) -> None:
        """Record one refused handshake from ``host``; ``kind`` groups repeats, ``reason`` says why."""
        with self._lock:
            self._refused(host, kind, reason)

    def _refused(self, host: str, kind: str, reason: str) -> None:
        self._flush()
        seen = self._seen.get((host, kind))
        if seen is not None:
            seen[0] += 1
            seen[1] = reason
        elif len(self._seen) >= self.max_hosts:
            self._overflow += 1
        else:
            self._seen[(host, kind)] = [0, reason]
            log.warning("refused a connection from %s: %s", host, reason)

    def flush(self, force: bool = False) -> None:
        """Log the counts of the window that ended (or now, if ``force``)."""
        with self._lock:
            self._flush(force)

    def _flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._started < self.window:
            return
        for (host, _), (repeats, reason) in self._seen.items():
            if repeats:
                log.warning("refused %d more connections from %s in the last %.0f s (%s)",
                            repeats, host, self.window, reason)
        if self._overflow:
            log.warning("refused %d connections from other hosts in the last %.0f s",
                        self._overflow, self.window)
        self._seen.clear()
        self._overflow = 0
        self._started = time.monotonic()


HANDSHAKE_REASONS = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "it does not use CURVE (no client keys set)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "CURVE handshake failed (wrong server public key?)",
}


@dataclass
class ServerSecurity:
    """What ``expertd serve`` was told about CURVE, checked before anything is loaded."""

    bind: str
    curve_secret_key: Path | None = None
    authorized_keys: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        """Check the settings and read the keys (raises ``SecurityError``)."""
        self.public_key = self.secret_key = None
        self.authorized: AuthorizedKeys | None = None
        self.refusals = RefusalLog()
        self._greenlets: list = []
        self._threads: list = []
        self._stop = threading.Event()
        self._sockets: list = []
        if self.curve_secret_key is None:
            if self.authorized_keys is not None:
                raise SecurityError("--authorized-keys needs --curve-secret-key (the server's "
                                    "*.key_secret file): client keys are checked only over CURVE")
            if not is_local_endpoint(self.bind):
                if not self.insecure:
                    raise SecurityError(
                        f"refusing to serve {self.bind} without encryption: anyone who can "
                        f"reach it could run every expert and read every opinion; "
                        f"{KEYGEN_HINT}; or pass --insecure if this network is trusted")
            return
        self.public_key, self.secret_key = read_key_file(self.curve_secret_key,
                                                         "server secret key", True)
        mode = self.curve_secret_key.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("server secret key %s is readable by other users (mode %o); "
                        "chmod 600 it", self.curve_secret_key, stat.S_IMODE(mode))
        if self.authorized_keys is not None:
            self.authorized = AuthorizedKeys(self.authorized_keys)

    @property
    def curve(self) -> bool:
        """True if connections are encrypted."""
        return self.secret_key is not None

    def log_start(self) -> None:
        """Say at start what protects the port (a warning when nothing does)."""
        if not self.curve:
            if not is_local_endpoint(self.bind):
                log.warning("--insecure: serving %s WITHOUT encryption or client keys; "
                            "anyone who can reach it can call every expert and read every "
                            "opinion (%s)", self.bind, KEYGEN_HINT)
            return
        public = self.public_key.decode()
        if self.authorized is None:
            log.warning("CURVE on (server public key %s) but no --authorized-keys: "
                        "any client that knows the server public key may connect", public)
        else:
            log.info("CURVE on (server public key %s); clients must have a key in %s",
                     public, self.authorized.directory)

    def apply(self, server) -> None:
        """Set the CURVE options on a ``zerorpc.Server`` and start ZAP; call before ``bind``."""
        self.log_start()
        if not self.curve:
            return
        events = server._events  # zerorpc 0.6.3: Events.setsockopt goes to the pyzmq socket
        context = events._context
        if self.authorized is not None:
            zap = context.socket(zmq.REP)
            zap.linger = 0
            zap.bind(ZAP_ENDPOINT)
            self._sockets.append(zap)
            self._greenlets.append(gevent.spawn(self._answer_zap, zap))
        self._watch_handshakes_in_thread(events._socket, context)
        events.setsockopt(zmq.CURVE_SERVER, 1)
        events.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        events.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

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
                name = self.authorized.name_of(credentials[0])
            if name is not None:
                reply = [version, request_id, b"200", b"OK", name.encode(), b""]
            else:
                key = z85.encode(credentials[0]).decode() if credentials else "none"
                self.refusals.refused(address.decode(errors="replace") or "unknown peer", "zap",
                                      f"client key {key} is not in {self.authorized.directory}")
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
        self._stop = threading.Event()
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
        """Stop the ZAP handler and the handshake monitor."""
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
