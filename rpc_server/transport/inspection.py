"""Method introspection that works on Python 3.11.

zerorpc 0.6.3 describes methods with ``inspect.getargspec``, which Python 3.11
removed, so ``_zerorpc_inspect`` (used by ``zerorpc -?`` and the Node client)
fails. ``builtins`` answers it, ``_zerorpc_args`` and ``_zerorpc_help`` with
``inspect.signature`` instead, in zerorpc's format:
``{"name", "methods": {m: {"args": [{"name", "default"?}], "doc"}}}``.
``transport.server.Server`` installs them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from expertd.rpc_server.errors import UnknownMethod
from expertd.rpc_server.logsafe import shown


def _target(functor: Any) -> Callable:
    # zerorpc wraps each method in a decorator object that keeps the function as ``_functor``.
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


def argspec(functor: Any) -> tuple | None:
    """A getargspec-like tuple ``(args, varargs, keywords, defaults)`` for ``_zerorpc_args``."""
    described = describe_args(functor)
    if described is None:
        return None
    defaults = [a["default"] for a in described if "default" in a]
    return ([a["name"] for a in described], None, None, defaults or None)


def describe(name: str, methods: dict) -> dict:
    """What ``_zerorpc_inspect`` answers for a server called ``name`` with ``methods``."""
    return {"name": name,
            "methods": {m: {"args": describe_args(f), "doc": describe_doc(f)}
                        for m, f in methods.items() if not m.startswith("_")}}


def builtins(name: str, methods: dict) -> dict[str, Callable]:
    """The introspection methods zerorpc injects, answered without ``getargspec``.

    ``methods`` is the server's live method table; an unknown method name
    answers ``UnknownMethod``.
    """
    def known(method: Any) -> Any:
        if isinstance(method, str) and method in methods:
            return methods[method]
        raise UnknownMethod(f"no RPC method or expert named {shown(method)!r}")

    return {"_zerorpc_args": lambda m: argspec(known(m)),
            "_zerorpc_help": lambda m: describe_doc(known(m)),
            "_zerorpc_inspect": lambda: describe(name, methods)}
