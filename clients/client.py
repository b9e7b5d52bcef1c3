"""The Python client: a small class over ``zerorpc.Client``.

One connection per ``ExpertsClient``, reused for every call; the endpoint
comes from the argument or ``EXPERTD_ENDPOINT``; calls time out; and since
every expertd method is idempotent (asking an opinion twice changes nothing),
calls that time out or lose the server are retried with backoff::

    from clients import ExpertsClient
    with ExpertsClient() as experts:
        experts.sentiment({"text": "I love it"})     # {'valence': 2.6, ...}
        experts.opinions({"text": "I love it"}, ["sentiment", "genre"])
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

import zerorpc

from clients import DEFAULT_ENDPOINT
from clients.curve import secure_zerorpc

#: Failures worth a retry: the call may not have reached a live server.
RETRYABLE = (zerorpc.TimeoutExpired, zerorpc.LostRemote)


def default_endpoint() -> str:
    """``EXPERTD_ENDPOINT`` or ``tcp://127.0.0.1:4242``."""
    return os.environ.get("EXPERTD_ENDPOINT") or DEFAULT_ENDPOINT


class ExpertsClient:
    """A reusable connection to an expertd server."""

    def __init__(self, endpoint: str | None = None, *, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.2, heartbeat: float = 5.0) -> None:
        """Connect (lazily, as ZeroMQ does) to ``endpoint``."""
        self.endpoint = endpoint or default_endpoint()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._client = zerorpc.Client(timeout=timeout, heartbeat=heartbeat)
        secure_zerorpc(self._client)  # CURVE keys from EXPERTD_SERVER_KEY/EXPERTD_CLIENT_KEY
        self._client.connect(self.endpoint)

    def call(self, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the server, retrying timeouts and lost connections."""
        attempt = 0
        while True:
            try:
                return self._client(method, *args)
            except RETRYABLE:
                if attempt >= self.retries:
                    raise
                time.sleep(min(self.backoff * (2 ** attempt), 2.0))
                attempt += 1

    def opinion(self, name: str, doc: dict) -> dict:
        """The opinion of expert ``name`` on ``doc``."""
        return self.call("opinion", name, doc)

    def opinions(self, doc: dict, names: Iterable[str] = ()) -> dict:
        """``doc`` with ``opinions.<name>`` (and ``errors.<name>``) for each expert named (all if none)."""
        return self.call("opinions", doc, list(names))

    def batch(self, name: str, docs: list[dict]) -> list[dict]:
        """The opinions of expert ``name`` on each document, in order."""
        return self.call("batch", name, list(docs))

    def opinions_batch(self, docs: list, names: Iterable[str] = ()) -> list:
        """Each document with its opinions and errors added, in order."""
        return self.call("opinions_batch", list(docs), list(names))

    def experts(self) -> list[dict]:
        """Names, versions, descriptions, fields and held-out metrics of the experts."""
        return self.call("experts")

    def health(self) -> dict:
        """The server's status, experts, version, pid and uptime."""
        return self.call("health")

    def stats(self) -> dict:
        """Per-expert calls, errors and latency."""
        return self.call("stats")

    def __getattr__(self, name: str):
        """``client.sentiment(doc)``: call the expert of that name."""
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda doc: self.call(name, doc)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> "ExpertsClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
