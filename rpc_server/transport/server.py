"""Method introspection that works on Python 3.11.

zerorpc 0.6.3 describes methods with ``inspect.getargspec``, which Python 3.11
removed, so ``_zerorpc_inspect`` (used by ``zerorpc -?`` and the Node client)
fails. ``InspectableServer`` answers it with ``inspect.signature`` instead, in
the same format: ``{"name", "methods": {m: {"args": [{"name", "default"?}], "doc"}}}``.
"""

from __future__ import annotations

import inspect
import logging
import os
import traceback
from typing import Any, Callable

import zerorpc
from zerorpc.exceptions import LostRemote

from expertd.rpc_server.deadlines import DeadlineMiddleware
from expertd.rpc_server.errors import ExpertdError, ShuttingDown, UnknownMethod
from expertd.rpc_server.transport.dispatch import GuardedMultiplexer
from expertd.rpc_server.logsafe import shown

log = logging.getLogger("expertd.server")


def _target(functor: Any) -> Callable:
    return getattr(functor, "_functor", functor)


def describe_args(functor: Any) -> list[dict] | None:
    """The argument list of a method, as zerorpc's inspect format gives it."""
    try:
        sig = inspect.signature(_target(functor))
    except (TypeError, ValueError):
        return None
    args = []
    for param in sig.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        entry: dict[str, Any] = {"name": param.name}
        if param.default is not param.empty:
            entry["default"] = param.default
        args.append(entry)
    return args


def describe_doc(functor: Any) -> str | None:
    """The cleaned docstring of a method."""
    doc = getattr(functor, "__doc__", None)
    return inspect.cleandoc(doc) if doc else None


def _argspec(functor: Any) -> tuple | None:
    """A getargspec-like tuple ``(args, varargs, keywords, defaults)`` for ``_zerorpc_args``."""
    described = describe_args(functor)
    if described is None:
        return None
    defaults = [a["default"] for a in described if "default" in a]
    return ([a["name"] for a in described], None, None, defaults or None)


class InspectableServer(zerorpc.Server):
    """``zerorpc.Server`` whose introspection works on Python 3.11+."""

    def __init__(self, *args, **kwargs) -> None:
        """As ``zerorpc.Server`` with its own context (deadline middleware) and a guarded
        dispatcher; unknown method names answer ``UnknownMethod``."""
        if kwargs.get("context") is None:
            kwargs["context"] = zerorpc.Context()
        kwargs["context"].register_middleware(DeadlineMiddleware())
        super().__init__(*args, **kwargs)
        self._multiplexer.close()  # zerorpc's dispatcher dies on one bad event: replace it
        self._multiplexer = GuardedMultiplexer(self._events)
        self._methods = MethodTable(self._methods)

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
            log.error("internal error %s: %s: %s\n%s", error_id, exc_type.__name__,
                      shown(str(exc_value), 200), stack.rstrip())
            name = "InternalError"
            message = (f"the server failed on this call (error id {error_id}, in its log); "
                       f"this is a bug in expertd, not in your request")
        if protocol_v1:
            return (f"{name}: {message}",)
        return (name, message, f"{name}: {message}")

    def _known(self, name: Any) -> Any:
        """The method called ``name``, or ``UnknownMethod`` (for the introspection calls)."""
        if isinstance(name, str) and name in self._methods:
            return self._methods[name]
        raise UnknownMethod(f"no RPC method or expert named {shown(name)!r}")

    def _zerorpc_inspect(self) -> dict:
        methods = {name: {"args": describe_args(f), "doc": describe_doc(f)}
                   for name, f in self._methods.items() if not name.startswith("_")}
        return {"name": self._name, "methods": methods}

    def _inject_builtins(self) -> None:
        super()._inject_builtins()
        self._methods["_zerorpc_args"] = lambda m: _argspec(self._known(m))
        self._methods["_zerorpc_help"] = lambda m: describe_doc(self._known(m))
        self._methods["_zerorpc_inspect"] = self._zerorpc_inspect


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
