"""In-process zerorpc servers and raw peers on 127.0.0.1 free ports (gevent, no mocks)."""

from __future__ import annotations

import contextlib

import gevent
import msgpack
import pytest
import zerorpc
import zmq.green as zmq_green

from tests.conftest import free_port


@contextlib.contextmanager
def running(server, endpoint: str | None = None, bind: bool = True):
    """``server`` bound to ``endpoint`` (a free port if None) and running in a greenlet."""
    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    if bind:
        server.bind(endpoint)
    task = gevent.spawn(server.run)
    try:
        yield endpoint
    finally:
        server.stop()
        task.kill()
        server.close()


@contextlib.contextmanager
def client(endpoint: str, timeout: float = 5.0):
    """A stock ``zerorpc.Client`` connected to ``endpoint``."""
    c = zerorpc.Client(endpoint, timeout=timeout)
    try:
        yield c
    finally:
        c.close()


class Peer:
    """A raw DEALER on the gevent loop: sends any frames, reads decoded replies."""

    def __init__(self, endpoint: str) -> None:
        """Connect to ``endpoint``."""
        self.context = zmq_green.Context()
        self.sock = self.context.socket(zmq_green.DEALER)
        self.sock.setsockopt(zmq_green.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        """Send ``frames`` as one message."""
        self.sock.send_multipart(frames)

    def reply(self, timeout_ms: int = 2000):
        """The next decoded ``[header, name, args]`` received, or None."""
        if not self.sock.poll(timeout_ms):
            return None
        frames = self.sock.recv_multipart()
        return msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)

    def call(self, message_id: str, name: str, args: list, timeout_ms: int = 2000):
        """A whole request/reply: the reply to ``message_id`` (heartbeats skipped), or None."""
        self.send([b"", msgpack.packb([{"message_id": message_id, "v": 3}, name, args],
                                      use_bin_type=True)])
        while True:
            reply = self.reply(timeout_ms)
            if reply is None or not reply[1].startswith("_zpc_"):
                return reply

    def close(self) -> None:
        """Close the socket and its context."""
        self.sock.close()
        self.context.term()


@pytest.fixture
def peer_to():
    """``peer_to(endpoint)``: a raw DEALER, closed after the test."""
    peers = []

    def make(endpoint: str) -> Peer:
        peers.append(Peer(endpoint))
        return peers[-1]

    yield make
    for p in peers:
        p.close()
