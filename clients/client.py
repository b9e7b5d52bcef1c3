"""The Python client: a small class over ``zerorpc.Client``.

An ``ExpertsClient`` keeps its connections and reuses them for every call; the
endpoint comes from the argument or ``EXPERTD_ENDPOINT``. Concurrent calls
(gevent greenlets) go to the least busy of up to ``connections`` connections,
opened only when every open one is busy, each on another worker of ``expertd
serve --workers N`` when it can be (``clients.spread``: the kernel spreads
connections, not calls, over the workers). Each call tells the server how long
it will wait (the ``expertd_timeout_ms`` header, added through zerorpc's
``client_before_request`` hook, so the server never computes an answer nobody
reads) and, when ``TRACEPARENT`` holds one, the caller's trace context
(``expertd_traceparent``, see ``expertd.tracecontext``). A call that fails for
a reason the error catalogue marks retryable (``Overloaded``,
``ShuttingDown``, a timeout, a lost server) is asked again with backoff:
asking an opinion twice changes nothing. A call that changes the server's
state (``learn``) is asked again only after a refusal the server gave before
running it (``Overloaded``, ``ShuttingDown``;
``expertd.retry.may_ask_again``), never after a timeout or a lost connection,
when it may have run::

    from expertd.clients import ExpertsClient
    with ExpertsClient() as experts:
        experts.sentiment({"text": "I love it"})     # {'valence': 2.6, ...}
        experts.expert("timeout")({"text": "x"})     # an expert whatever its name
        experts.opinions({"text": "I love it"}, ["sentiment", "genre"])
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable

import zerorpc

from expertd.clients import DEFAULT_ENDPOINT
from expertd.clients.curve import secure_zerorpc
from expertd.clients.spread import WorkerMap
from expertd.endpoint import parse_endpoint
from expertd.retry import CLIENT, CLIENT_RETRIES, may_ask_again
from expertd.spec import ERROR, METHOD, TIMEOUT_HEADER, TRACE_HEADER, kind
from expertd import tracing
from expertd.tracecontext import environment_traceparent, parse


def default_endpoint() -> str:
    """``EXPERTD_ENDPOINT``, else the spec's default endpoint."""
    return os.environ.get("EXPERTD_ENDPOINT") or DEFAULT_ENDPOINT


def how_to_start(endpoint: str) -> str:
    """What to do when no server answers at ``endpoint``."""
    return (f"is a server running there? Start one with `expertd serve --bind {endpoint}` "
            f"(or `make run`), or point EXPERTD_ENDPOINT at one")


class ServerTimeout(zerorpc.TimeoutExpired):
    """No answer in time; says from where, after how many tries, and what to do."""

    def __init__(self, endpoint: str, method: str, timeout: float, tries: int) -> None:
        """The call of ``method`` at ``endpoint`` waited ``timeout`` s, ``tries`` times."""
        super().__init__(timeout, f"calling {method}")
        self.endpoint, self.method, self.tries = endpoint, method, tries
        self.args = (f"no answer from {endpoint} to {method}() within {timeout:g} s "
                     f"({tries} {'try' if tries == 1 else 'tries'}); {how_to_start(endpoint)}",)


class ServerLost(zerorpc.LostRemote):
    """The server stopped answering heartbeats mid-call; says which and what to do."""

    def __init__(self, endpoint: str, method: str, tries: int) -> None:
        """The call of ``method`` at ``endpoint`` lost its server ``tries`` times."""
        super().__init__(f"lost the server at {endpoint} while calling {method}() "
                         f"({tries} {'try' if tries == 1 else 'tries'}); "
                         f"{kind(ERROR.ServerUnavailable).hint}")
        self.endpoint, self.method, self.tries = endpoint, method, tries


class _SayHowLongWeWait:
    """zerorpc middleware: put the waiting ``ExpertsClient``'s timeout in its request's header.

    zerorpc runs ``client_before_request`` synchronously inside the call, before
    anything can yield, and the hook clears ``wait_ms`` once used, so ``wait_ms``
    set just before an ``ExpertsClient`` call belongs to that call alone; other
    zerorpc clients in the process (``wait_ms`` is None then) send their
    requests unchanged.
    """

    wait_ms: int | None = None
    traceparent: str | None = None

    def client_before_request(self, event) -> None:
        """Add ``expertd_timeout_ms`` and the caller's ``expertd_traceparent`` (stock servers ignore
        them), once: the values are used up."""
        if self.wait_ms is not None:
            event.header[TIMEOUT_HEADER] = self.wait_ms
            self.wait_ms = None
        if self.traceparent is not None:
            event.header[TRACE_HEADER] = self.traceparent
            self.traceparent = None


_HEADER_HOOK: _SayHowLongWeWait | None = None


def _header_hook() -> _SayHowLongWeWait:
    """The one hook, registered once on zerorpc's default context."""
    global _HEADER_HOOK
    if _HEADER_HOOK is None:
        _HEADER_HOOK = _SayHowLongWeWait()
        zerorpc.Context.get_instance().register_middleware(_HEADER_HOOK)
    return _HEADER_HOOK


def _catalogue_name(exc: Exception) -> str:
    if isinstance(exc, zerorpc.RemoteError):
        return exc.name
    if isinstance(exc, zerorpc.TimeoutExpired):
        return ERROR.RpcTimeout
    return ERROR.ServerUnavailable  # LostRemote


class ExpertsClient:
    """A reusable connection to an expertd server.

    ``client.NAME(doc)`` asks the expert ``NAME``; ``client.expert(NAME)``
    reaches any expert, also one named like a method of this class
    (``call``, ``close``, ``expert``...).
    """

    def __init__(self, endpoint: str | None = None, *, timeout: float = 30.0,
                 retries: int = CLIENT_RETRIES, backoff: float = CLIENT.base,
                 heartbeat: float = 5.0,
                 connections: int = 2) -> None:
        """Connect (lazily, as ZeroMQ does) to ``endpoint``.

        ``timeout``: seconds to wait for one answer; ``retries``: how many
        times a retryable failure is asked again, after ``backoff`` seconds,
        growing with jitter as the spec's ``client`` retry profile says
        (``expertd.retry``: doubling, at most 2 s); ``connections``: how many
        connections concurrent calls may spread over (1: one for everything).
        """
        if not isinstance(connections, int) or connections < 1:
            raise ValueError(f"connections must be an integer >= 1, got {connections!r}")
        self.endpoint = endpoint or default_endpoint()
        parse_endpoint(self.endpoint)  # EndpointError (a ValueError) now, not at the first call
        self._timeout = timeout
        self._retries = retries
        self._policy = CLIENT.with_base(backoff)
        self._heartbeat = heartbeat
        self._most = connections
        self._hook = _header_hook()
        self._clients: list[zerorpc.Client] = [self._connect()]
        self._busy: dict[int, int] = {}          # id(client) -> calls in flight on it
        self._workers = WorkerMap()  # the worker each connection reaches
        self._no_spare_until = 0.0
        self._opening = False

    @property
    def _client(self) -> zerorpc.Client:
        """The first connection."""
        return self._clients[0]

    def _connect(self) -> zerorpc.Client:
        client = zerorpc.Client(timeout=self._timeout, heartbeat=self._heartbeat)
        secure_zerorpc(client)  # CURVE keys from EXPERTD_SERVER_KEY/EXPERTD_CLIENT_KEY
        client.connect(self.endpoint)
        return client

    def _least_busy(self) -> zerorpc.Client:
        """The connection for the next call: the least busy, or a new one when all are busy."""
        least = min(self._clients, key=lambda c: self._busy.get(id(c), 0))
        if (self._busy.get(id(least), 0) == 0 or len(self._clients) >= self._most
                or self._opening or time.monotonic() < self._no_spare_until):
            return least
        self._opening = True  # the calls that come meanwhile take the ones open
        try:
            return self._open_spare(least)
        finally:
            self._opening = False

    def _open_spare(self, least: zerorpc.Client) -> zerorpc.Client:
        """A new connection on a worker the others do not use (when it can be), or ``least``."""
        def health(client: zerorpc.Client):
            return client(METHOD.health, timeout=min(self._timeout, 5.0))

        try:
            spare, _ = self._workers.open_spare(self._clients, self._connect, health,
                                                lambda c: c.close())
        except (zerorpc.RemoteError, zerorpc.TimeoutExpired, zerorpc.LostRemote):
            self._no_spare_until = time.monotonic() + 1.0  # go on with those it has
            return least
        self._clients.append(spare)
        return spare

    def call(self, method: str, *args: Any) -> Any:
        """Call ``method(*args)`` on the server, asking again while the failure is retryable."""
        attempt = 0
        while True:
            client = self._least_busy()
            key = id(client)
            self._busy[key] = self._busy.get(key, 0) + 1
            try:
                # A synchronous call: zerorpc's async mode waits in a greenlet of its
                # own, whose failure (a timeout when no server answers) gevent's hub
                # prints as tracebacks on stderr before ours is raised. The hook
                # uses ``wait_ms`` up before anything yields, so it stays this call's.
                traceparent = environment_traceparent()  # TRACEPARENT: the caller's trace
                traced = tracing.enabled() and tracing.records(parent := parse(traceparent))
                span = tracing.NO_SPAN if not traced else tracing.span(
                    f"expertd {method}", parent, kind="client",
                    attributes={"rpc.system": "zerorpc", "rpc.method": method,
                                "server.address": self.endpoint})
                self._hook.wait_ms = int(self._timeout * 1000)
                # Recorded, or a new trace the sampler dropped (the server follows the decision).
                self._hook.traceparent = span.context.header() if span.context is not None else traceparent
                try:
                    with span:
                        return client(method, *args)
                finally:
                    self._hook.wait_ms = self._hook.traceparent = None
            except (zerorpc.RemoteError, zerorpc.TimeoutExpired, zerorpc.LostRemote) as exc:
                if not may_ask_again(method, _catalogue_name(exc)):
                    raise
                if attempt >= self._retries:
                    if isinstance(exc, zerorpc.TimeoutExpired):
                        raise ServerTimeout(self.endpoint, method, self._timeout,
                                            attempt + 1) from None
                    if isinstance(exc, zerorpc.LostRemote):
                        raise ServerLost(self.endpoint, method, attempt + 1) from None
                    raise
            finally:
                self._busy[key] -= 1
            time.sleep(self._policy.pause(attempt))
            attempt += 1

    def expert(self, name: str) -> Callable[[dict], dict]:
        """A function that asks the expert ``name`` for its opinion on a document."""
        return lambda doc: self.opinion(name, doc)

    def opinion(self, name: str, doc: dict) -> dict:
        """The opinion of expert ``name`` on ``doc``."""
        return self.call(METHOD.opinion, name, doc)

    def opinions(self, doc: dict, names: Iterable[str] = ()) -> dict:
        """``doc`` with ``opinions.<name>`` (and ``errors.<name>``) for each expert named (all if none)."""
        return self.call(METHOD.opinions, doc, list(names))

    def batch(self, name: str, docs: list[dict]) -> list[dict]:
        """The opinions of expert ``name`` on each document, in order."""
        return self.call(METHOD.batch, name, list(docs))

    def opinions_batch(self, docs: list, names: Iterable[str] = ()) -> list:
        """Each document with its opinions and errors added, in order."""
        return self.call(METHOD.opinions_batch, list(docs), list(names))

    def experts(self) -> list[dict]:
        """Names, versions, descriptions, fields and held-out metrics of the experts."""
        return self.call(METHOD.experts)

    def health(self) -> dict:
        """The server's status, experts, version, pid and uptime."""
        return self.call(METHOD.health)

    def stats(self) -> dict:
        """Per-expert calls, errors and latency."""
        return self.call(METHOD.stats)

    def __getattr__(self, name: str):
        """``client.sentiment(doc)``: ask the expert of that name."""
        if name.startswith("_"):
            raise AttributeError(name)
        return self.expert(name)

    def close(self) -> None:
        """Close every connection."""
        for client in self._clients:
            client.close()

    def __enter__(self) -> "ExpertsClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
