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

This module is the policy (key files, authorized keys, refusals, when to
refuse to start); ``rpc_server.transport.curve`` puts it on the ZeroMQ socket.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from zmq.utils import z85

from expertd.endpoint import parse_endpoint
from expertd.keys import read_certificate, valid_key
from expertd.rpc_server.transport import CurveGuard

log = logging.getLogger("expertd.security")

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
        self._guard: CurveGuard | None = None
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
        """Put CURVE (and ZAP, with authorized keys) on a ``transport.Server``; call before ``bind``."""
        self.log_start()
        if not self.curve:
            return
        if self.authorized is None:
            self._guard = CurveGuard(server, self.secret_key, self.refusals)
        else:
            self._guard = CurveGuard(server, self.secret_key, self.refusals,
                                     self.authorized.name_of, str(self.authorized.directory))

    def close(self) -> None:
        """Stop the ZAP handler and the handshake watch."""
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        else:
            self.refusals.flush(force=True)


