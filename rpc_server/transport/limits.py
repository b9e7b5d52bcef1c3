"""Limits that keep one peer from exhausting the server: message size, handshakes, open files."""

from __future__ import annotations

import resource

from typing import TYPE_CHECKING

import zmq

if TYPE_CHECKING:
    from expertd.rpc_server.transport.server import Server


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft open-file limit to its hard limit; return ``(soft, hard)``.

    Each connection is a file descriptor: under the common soft limit of 1,024,
    about 1,000 idle connections would lock every other caller out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def limit_socket(server: Server, max_message_bytes: int, handshake_timeout_ms: float) -> None:
    """Cap the size of one message and the time a connection may take to handshake.

    Must run before ``bind``. A peer that sends a larger message, or does not
    finish its ZMTP handshake in time, is disconnected by ZeroMQ itself (so a
    peer announcing a 4 GiB frame costs nothing).
    """
    server.setsockopt(zmq.MAXMSGSIZE, int(max_message_bytes))
    server.setsockopt(zmq.HANDSHAKE_IVL, int(handshake_timeout_ms))
