"""CURVE key files as both sides read them: ZeroMQ certificate parsing and Z85 key checks.

Shared by the server (``rpc_server.security``) and the clients (``clients.curve``)
so that a key one side accepts is a key the other side accepts. Parsed by hand
because ``import zmq.auth`` costs a pipe stage ~10 ms more.
"""

from __future__ import annotations

import struct


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
