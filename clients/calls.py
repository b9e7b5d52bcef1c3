"""zerorpc request/reply over any transport: the errors, the events and the call bookkeeping.

Shared by the clients' two transports, the plain ZMTP ``clients.wire.Connection``
and the CURVE-encrypted ``clients.curve.CurveConnection``: each moves bytes,
this module makes and files the zerorpc events (``[header, name, args]`` in
msgpack; replies ``OK [result]`` and ``ERR [name, message, traceback]``;
``_zpc_hb`` heartbeats for the calls still waiting). Its msgpack is
``clients.lean_msgpack``'s: a one-document stage never imports the real one.
"""

from __future__ import annotations

import os
import sys
import time

from expertd.clients import lean_msgpack as msgpack  # msgpack's bytes, without importing it
from expertd.spec import ERROR, TIMEOUT_HEADER, TRACE_HEADER

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import Any


#: The variables without which no call is traced nor carries a trace context: an exporter
#: (``expertd.tracing``) and the caller's ``TRACEPARENT`` (``expertd.tracecontext``). Without
#: them, and unless ``expertd.tracing`` is imported already, a call imports neither module
#: (a one-document stage saves their import).
TRACE_VARIABLES = ("OTEL_TRACES_EXPORTER", "TRACEPARENT")


def _tracing():
    """``expertd.tracing`` if a call may be traced or carry a trace context, else ``None``."""
    module = sys.modules.get("expertd.tracing")
    if module is None:
        if not any(os.environ.get(name) for name in TRACE_VARIABLES):
            return None
        from expertd import tracing as module
    return module


class ServerUnavailable(ConnectionError):
    """No zerorpc server answers at the endpoint."""


class CallTimeout(TimeoutError):
    """The server did not answer in time."""


class RemoteError(Exception):
    """The server answered ``ERR``: ``name`` is the remote exception's class name."""

    def __init__(self, name: str, message: str, traceback: str = "") -> None:
        """Keep the remote exception's name, message and traceback."""
        super().__init__(f"{name}: {message}")
        self.name = name
        self.msg = message
        self.traceback = traceback


def pack_array(packed_items: list[bytes]) -> bytes:
    """A msgpack array made of items that are each already msgpack-encoded."""
    n = len(packed_items)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(packed_items)


def request_payload(message_id: str, method: str, packed_args: bytes, wait: float,
                    traceparent: str | None = None) -> bytes:
    """A zerorpc request event ``[header, name, args]`` with ``args`` already packed.

    The header says how long the caller will wait (``expertd_timeout_ms``) and,
    when there is one, the caller's trace context (``expertd_traceparent``).
    """
    header = {"message_id": message_id, "v": 3, TIMEOUT_HEADER: int(1000 * wait)}
    if traceparent is not None:
        header[TRACE_HEADER] = traceparent
    return (b"\x93" + msgpack.packb(header, use_bin_type=True)
            + msgpack.packb(method, use_bin_type=True) + packed_args)


class WaitInterrupted(Exception):
    """The caller asked to stop waiting for a reply (``Calls.stop_waiting``: a signal came).

    The call is still pending: its reply may yet be collected (``collect``, ``receive``).
    """


class Calls:
    """The zerorpc request/reply bookkeeping that every client connection shares.

    A subclass sets ``endpoint``, ``timeout``, ``heartbeat``, ``_replies`` and
    ``_pending``, and moves bytes: ``_send_payload(payload)`` sends one event,
    ``_wait_for_replies(until)`` files (``_file_reply``) what arrives before ``until``.
    """

    #: Other connections of the same client: their waiting calls are heartbeaten while
    #: this one waits (a client waits on one connection at a time).
    peers: tuple = ()
    #: If set, asked while a reply is waited for: True stops the wait (``WaitInterrupted``).
    stop_waiting = None
    #: A descriptor that becomes readable when ``stop_waiting`` may have turned True (the read
    #: end of ``signal.set_wakeup_fd``'s pipe), so that a wait notices at once.
    wake_fd: int | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the transport."""
        raise NotImplementedError

    # -- calls ----------------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method(*args)`` and return its result (raises ``RemoteError``)."""
        return self.receive(self.send(method, *args, timeout=timeout), timeout=timeout)

    def send(self, method: str, *args: Any, timeout: float | None = None) -> str:
        """Send a request without waiting; returns its id for ``receive``.

        The header says how long the caller will wait (``timeout``, or the
        connection's): the server answers ``Overloaded`` rather than compute
        what nobody will read. Stock zerorpc servers ignore the key.
        """
        return self.send_packed(method, msgpack.packb(list(args), use_bin_type=True),
                                timeout=timeout)

    def send_packed(self, method: str, packed_args: bytes, timeout: float | None = None) -> str:
        """``send`` with the argument list already msgpack-encoded (see ``pack_array``)."""
        message_id = os.urandom(16).hex()
        traceparent = None
        tracing = _tracing()
        if tracing is not None:
            from expertd.tracecontext import environment_traceparent, parse

            traceparent = environment_traceparent()
            # A client span per call (a chunk of the pipe stage), under TRACEPARENT, unless it
            # says "not sampled".
            if tracing.enabled() and tracing.records(parent := parse(traceparent)):
                span = tracing.span(f"expertd {method}", parent, kind="client",
                                    attributes={"rpc.system": "zerorpc", "rpc.method": method,
                                                "server.address": self.endpoint})
                self._spans()[message_id] = span
                if span.context is not None:  # recorded, or a new trace the sampler dropped
                    traceparent = span.context.header()
        payload = request_payload(message_id, method, packed_args,
                                  self.timeout if timeout is None else timeout, traceparent)
        self._pending.add(message_id)
        self._send_payload(payload)
        return message_id

    def receive(self, message_id: str, timeout: float | None = None) -> Any:
        """Wait for the reply to ``message_id``; heartbeat while waiting."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        next_beat = time.monotonic() + self.heartbeat
        try:
            while message_id not in self._replies:
                now = time.monotonic()
                if now >= deadline:  # given up: no more heartbeats for it, a late reply is dropped
                    self._pending.discard(message_id)
                    self._end_span(message_id, ERROR.RpcTimeout)
                    raise CallTimeout(f"no answer from {self.endpoint} in {wait:g} s")
                if self.stop_waiting is not None and self.stop_waiting():
                    # Still pending (its reply may be collected yet): its span ends then, or at close().
                    raise WaitInterrupted(f"stopped waiting for {self.endpoint}")
                if now >= next_beat:
                    self.beat()
                    for peer in self.peers:
                        if peer is not self:
                            try:
                                peer.beat()
                            except ServerUnavailable:
                                pass  # found out when its own reply is waited for
                    next_beat = now + self.heartbeat
                self._wait_for_replies(min(deadline, next_beat))
        except ServerUnavailable as exc:  # the connection is lost, and this call with it
            self._end_span(message_id, ERROR.ServerUnavailable, str(exc))
            raise
        name, args = self._replies.pop(message_id)
        self._pending.discard(message_id)
        if name == "OK":
            self._end_span(message_id)
            return args[0]
        if name == "ERR":
            args = list(args) + ["", "", ""]
            self._end_span(message_id, str(args[0]), str(args[1]))
            raise RemoteError(str(args[0]), str(args[1]), str(args[2]))
        error = RemoteError("ProtocolError", f"unexpected reply {name!r}")
        self._end_span(message_id, error.name, error.msg)
        raise error

    def _spans(self) -> dict:
        """The client spans of the calls sent and not yet answered (tracing on only)."""
        spans = self.__dict__.get("_call_spans")
        if spans is None:
            spans = self.__dict__["_call_spans"] = {}
        return spans

    def _end_span(self, message_id: str, error: str | None = None, message: str = "") -> None:
        spans = self.__dict__.get("_call_spans")
        span = spans.pop(message_id, None) if spans else None
        if span is not None:
            if error is not None:
                span.fail(error, message)
            span.end()

    def end_unanswered_spans(self) -> None:
        """End the spans of the calls still unanswered here (the connection closes), with the reason:
        ``WaitInterrupted`` when the caller stopped waiting (a signal), else ``Unanswered``."""
        spans = self.__dict__.get("_call_spans")
        if not spans:
            return
        interrupted = self.stop_waiting is not None and self.stop_waiting()
        error = "WaitInterrupted" if interrupted else "Unanswered"
        while spans:
            _, span = spans.popitem()
            span.fail(error, f"no reply from {self.endpoint} before the connection closed")
            span.end()

    def beat(self) -> None:
        """Send one heartbeat for each call still waiting for its reply here."""
        for pending in self._pending:
            self._emit({"message_id": os.urandom(16).hex(), "v": 3,
                        "response_to": pending}, "_zpc_hb", [0])

    def _emit(self, header: dict, name: str, args: list) -> None:
        self._send_payload(msgpack.packb([header, name, args], use_bin_type=True))

    def _file_reply(self, payload: bytes) -> None:
        try:
            header, name, args = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:
            return
        reply_to = header.get("response_to") if isinstance(header, dict) else None
        if reply_to in self._pending and name not in ("_zpc_hb", "_zpc_more"):
            self._replies[reply_to] = [name, args]

    def _send_payload(self, payload: bytes) -> None:
        raise NotImplementedError

    def _wait_for_replies(self, until: float) -> None:
        raise NotImplementedError
