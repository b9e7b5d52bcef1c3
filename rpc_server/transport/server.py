"""The zerorpc server expertd runs: guarded dispatch, clear errors, 3.11 introspection.

``Server`` is a ``zerorpc.Server`` (0.6.3) with

* a dispatcher that no peer can stop (``transport.dispatch``);
* introspection that works on Python 3.11 (``transport.inspection``);
* ERR replies ``[name, message, "Name: message"]``, never a traceback;
* a method table where an unknown name answers ``UnknownMethod`` and, while
  the server drains, every public method answers ``ShuttingDown``;
* public methods for what the rest of expertd needs from the socket and the
  call pool (``setsockopt``, ``unbind``, ``in_flight``, ``draining``, ...), so
  that nothing outside this package touches zerorpc's private attributes.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

import zerorpc
import zerorpc.events
import zmq
from zerorpc.exceptions import LostRemote

from expertd.rpc_server import call_trace
from expertd.rpc_server.call_trace import TraceMiddleware
from expertd.rpc_server.deadlines import DeadlineMiddleware
from expertd.rpc_server.errors import ExpertdError, ShuttingDown, UnknownMethod
from expertd.rpc_server.logsafe import shown
from expertd.rpc_server.transport import inspection
from expertd.rpc_server.transport.dispatch import GuardedMultiplexer
from expertd.spec import ERROR

log = logging.getLogger("expertd.server")


class Server(zerorpc.Server):
    """``zerorpc.Server`` hardened for expertd (see the module docstring)."""

    def __init__(self, methods: dict, name: str | None = None, heartbeat: float = 5.0,
                 context: zerorpc.Context | None = None) -> None:
        """Serve ``methods`` (name -> callable) with its own context (deadline and trace middleware)."""
        if context is None:
            context = zerorpc.Context()
        context.register_middleware(DeadlineMiddleware())
        context.register_middleware(TraceMiddleware())
        # zerorpc keeps a dict of methods as it is: the table is ours from the start.
        super().__init__(MethodTable(methods), name=name, context=context, heartbeat=heartbeat)
        self._multiplexer.close()  # zerorpc's dispatcher dies on one bad event: replace it
        # zerorpc's sender and receiver keep the last message they moved until the
        # next one: after a big call, its request and its answer stayed resident.
        events = self._events
        events._send.close()
        events._send = Sender(events._socket)
        events._recv.close()
        events._recv = Receiver(events._socket)
        self._multiplexer = GuardedMultiplexer(self._events)

    # -- what the rest of expertd may use -------------------------------------------

    def setsockopt(self, option: int, value: Any) -> None:
        """Set a ZeroMQ option on the server's ROUTER socket (before ``bind`` for most)."""
        self._events.setsockopt(option, value)

    @property
    def zmq_socket(self) -> zmq.Socket:
        """The server's ROUTER socket (pyzmq, gevent-aware)."""
        return self._events._socket

    @property
    def zmq_context(self) -> zmq.Context:
        """The ZeroMQ context of the server's socket (ZAP handlers must live in it)."""
        return self._events._context

    def unbind(self, endpoint: str) -> None:
        """Stop listening on ``endpoint`` (libzmq also closes the connections it accepted)."""
        self._events._socket.unbind(endpoint)

    @property
    def in_flight(self) -> int:
        """Calls running now."""
        return len(self._task_pool)

    @property
    def draining(self) -> bool:
        """True once new calls answer ``ShuttingDown`` at once."""
        return self._methods.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._methods.draining = bool(value)

    def kill_calls(self) -> None:
        """End every call still running (their callers get no answer)."""
        self._task_pool.kill()

    @property
    def dropped_events(self) -> int:
        """Events the dispatcher dropped or refused (malformed, foreign, overflow)."""
        return self._multiplexer.dropped

    # -- zerorpc's hooks ------------------------------------------------------------

    def _print_traceback(self, protocol_v1, exc_infos):
        """What an ERR reply carries: ``[name, message, "Name: message"]``, never a traceback.

        The third field is what the stock Python client's ``str(RemoteError)``
        shows, so it reads ``Name: message``. An exception that is not an
        ``ExpertdError`` is a bug of ours: its traceback goes to the server log
        under an id, and the caller gets ``InternalError`` with that id.
        """
        exc_type, exc_value, _ = exc_infos
        if isinstance(exc_value, LostRemote):
            log.info("caller went away: %s", exc_value)
            return ("LostRemote", str(exc_value), f"LostRemote: {exc_value}")
        if isinstance(exc_value, ExpertdError):
            name, message = exc_type.__name__, str(exc_value)
        else:
            error_id = os.urandom(4).hex()
            # The stack is the server's own code; the message may hold what a caller sent: bounded.
            stack = "".join(traceback.format_tb(exc_infos[2])[-12:])
            trace = call_trace.current()
            log.error("internal error %s: %s: %s%s\n%s", error_id, exc_type.__name__,
                      shown(str(exc_value), 200), trace.log_field() if trace else "", stack.rstrip())
            name = ERROR.InternalError
            message = (f"the server failed on this call (error id {error_id}, in its log); "
                       f"this is a bug in expertd, not in your request")
        if protocol_v1:
            return (f"{name}: {message}",)
        return (name, message, f"{name}: {message}")

    def _acceptor(self):
        """zerorpc's acceptor, without keeping the last call's first event alive.

        zerorpc's loop keeps the event in a local until the next call arrives:
        its arguments (100,000 documents, a few hundred MiB once decoded) stayed
        resident for as long as the server was idle.
        """
        while True:
            self._task_pool.spawn(self._async_task, self._multiplexer.recv())

    def _inject_builtins(self) -> None:
        super()._inject_builtins()
        self._methods.update(inspection.builtins(self._name, self._methods))


class Sender(zerorpc.events.Sender):
    """zerorpc's queued sender, holding no message once it is handed to ZeroMQ."""

    def _sender(self):
        while True:
            self._send(self._send_queue.get())


class Receiver(zerorpc.events.Receiver):
    """zerorpc's receiver greenlet, holding no message once it is handed on."""

    def _recver(self):
        while True:
            self._recv_queue.put(self._recv())


class MethodTable(dict):
    """zerorpc's method table; an unknown name gets a clear ``UnknownMethod`` error.

    While the server drains (``draining``), every public method answers
    ``ShuttingDown`` at once instead of starting new work.
    """

    draining = False

    def get(self, name, default=None):
        """The method called ``name``, or one that explains why it cannot run."""
        if self.draining and not name.startswith("_"):
            def refuse(*args):
                raise ShuttingDown("the server is shutting down; retry on another server "
                                   "or after it restarts")

            return zerorpc.rep(refuse)
        if name in self:
            return self[name]
        public = sorted(m for m in self if not m.startswith("_"))

        def unknown(*args):
            raise UnknownMethod(f"no RPC method or expert named {shown(name)!r}; "
                                f"this server has: {', '.join(public)}")

        return zerorpc.rep(unknown)
