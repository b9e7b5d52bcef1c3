"""CURVE key files as ``expertd keygen`` writes them and both sides read them.

Writing: ``generate`` (the server's pair, one per client, the authorized
copies); reading: ZeroMQ certificate parsing and Z85 key checks.

Shared by the server (``rpc_server.security``) and the clients (``clients.curve``)
so that a key one side accepts is a key the other side accepts. Parsed by hand
because ``import zmq.auth`` costs a pipe stage ~10 ms more.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path


def read_certificate(path) -> tuple[bytes | None, bytes | None]:
    """``(public, secret)`` Z85 keys of a ZeroMQ certificate file (as ``zmq.auth`` reads them).

    Either is None when the file has no such line; raises OSError if it cannot be read.
    """
    public = secret = None
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line.startswith(b"public-key"):
                public = line.split(b"=", 1)[1].strip(b" \t'\"")
            elif line.startswith(b"secret-key"):
                secret = line.split(b"=", 1)[1].strip(b" \t'\"")
    return public, secret


def valid_key(key: bytes | None) -> bool:
    """True if ``key`` is a CURVE key in Z85 (40 characters that decode to 32 bytes)."""
    from zmq.utils import z85

    try:
        return key is not None and len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError, struct.error):  # not Z85
        return False


# -- writing: `expertd keygen` ---------------------------------------------------------

SERVER = "server"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def make_pair(directory: Path, name: str) -> tuple[Path, Path, bool]:
    """Write ``NAME.key`` and ``NAME.key_secret`` in ``directory`` unless they exist.

    Returns the public and secret file and whether they were created now.
    """
    import zmq.auth

    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if secret.exists():
        return public, secret, False
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    secret.chmod(0o600)
    public.chmod(0o644)
    return public, secret, True


def generate(directory: Path, clients: list[str]) -> list[str]:
    """Make the server pair and one pair per client under ``directory``; returns what was done."""
    import shutil

    done = []
    _private_dir(directory)
    for sub in ("clients", "authorized"):
        _private_dir(directory / sub)
    _, server_secret, made = make_pair(directory, SERVER)
    done.append(f"{'wrote' if made else 'kept'} {server_secret} (and {SERVER}.key)")
    for name in clients:
        public, secret, made = make_pair(directory / "clients", name)
        authorized = directory / "authorized" / public.name
        if not authorized.exists():
            shutil.copyfile(public, authorized)
        done.append(f"{'wrote' if made else 'kept'} {secret}; authorized {authorized}")
    return done
