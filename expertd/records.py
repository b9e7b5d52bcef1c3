"""``record``: ``collections.namedtuple`` without importing ``collections``.

The one-document pipe stage's modules (``expertd.spec``, ``endpoint``, ``names``,
``retry``, ``tracecontext``) each define a small named tuple; importing
``collections`` for them (with ``itertools``, ``keyword``, ``operator`` and
``reprlib``) cost every stage about 1.5 ms (bench/RESULTS-startup.md). A
``record`` class is a tuple subclass with what expertd uses of a namedtuple,
with C field getters as a namedtuple's (its ``__new__`` is a closure, where
namedtuple compiles one with ``eval``: 80 µs a class). Positional and
keyword construction, ``defaults``, read-only fields, ``_fields``,
``_field_defaults``, ``_make``, ``_replace``, ``_asdict``, the same ``repr``,
equality and hash of a tuple, pickling and ``match`` by position.
"""

from __future__ import annotations

import sys

try:
    from _collections import _tuplegetter  # what namedtuple's fields are (CPython)
except ImportError:  # pragma: no cover - another Python
    from _operator import itemgetter

    def _tuplegetter(index: int, doc: str):
        return property(itemgetter(index), doc=doc)


#: Python's keywords (``keyword.kwlist``, without importing ``keyword``): not field names.
_KEYWORDS = frozenset(
    "False None True and as assert async await break class continue def del elif else except "
    "finally for from global if import in is lambda nonlocal not or pass raise return try "
    "while with yield".split())


def _bind(typename: str, fields: tuple, defaults: dict, args: tuple, kwargs: dict) -> tuple:
    """The fields' values from a call with keywords, defaults or a wrong number of arguments
    (``TypeError`` as a function of those parameters would raise)."""
    if not args and len(kwargs) == len(fields):  # every field by name (``expertd.spec``'s way)
        try:
            return tuple([kwargs[name] for name in fields])
        except KeyError:
            pass
    if len(args) > len(fields):
        raise TypeError(f"{typename}.__new__() takes {len(fields) + 1} positional arguments but "
                        f"{len(args) + 1} were given")
    values = list(args)
    for name in fields[len(args):]:
        if name in kwargs:
            values.append(kwargs.pop(name))
        elif name in defaults:
            values.append(defaults[name])
        else:
            raise TypeError(f"{typename}.__new__() missing required argument: {name!r}")
    for name in kwargs:
        if name in fields:
            raise TypeError(f"{typename}.__new__() got multiple values for argument {name!r}")
        raise TypeError(f"{typename}.__new__() got an unexpected keyword argument {name!r}")
    return tuple(values)


def record(typename: str, field_names: str, defaults: tuple = ()) -> type:
    """A tuple subclass named ``typename`` with the space-separated ``field_names``, the last
    ``len(defaults)`` of which default to ``defaults`` (as ``namedtuple(typename,
    field_names, defaults=defaults)``). Subclass it to add methods (with ``__slots__ = ()``)."""
    fields = tuple(field_names.split())
    for name in (typename, *fields):
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"record names must be identifiers without a leading underscore: {name!r}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"duplicate field name in {field_names!r}")
    defaults = tuple(defaults)
    if len(defaults) > len(fields):
        raise TypeError("got more default values than field names")
    if any(name in _KEYWORDS for name in fields):
        raise ValueError(f"record field names cannot be keywords: {field_names!r}")
    arguments = ", ".join(fields)
    count = len(fields)
    field_defaults = dict(zip(fields[count - len(defaults):], defaults))
    tuple_new = tuple.__new__

    def __new__(cls, *args, **kwargs):
        if kwargs or len(args) != count:
            args = _bind(typename, fields, field_defaults, args, kwargs)
        return tuple_new(cls, args)

    __new__.__qualname__ = f"{typename}.__new__"
    __new__.__doc__ = f"Create new instance of {typename}({arguments})"
    shown = ", ".join(f"{name}=%r" for name in fields)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({shown % tuple(self)})"

    def _asdict(self) -> dict:
        """A dict of the fields, in order."""
        return dict(zip(self._fields, self))

    def _replace(self, **changes):
        """A copy with the named fields changed."""
        result = self._make(map(changes.pop, self._fields, self))
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return result

    @classmethod
    def _make(cls, iterable):
        """An instance from a sequence or iterable of the fields' values."""
        result = tuple.__new__(cls, iterable)
        if len(result) != len(fields):
            raise TypeError(f"Expected {len(fields)} arguments, got {len(result)}")
        return result

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    namespace = {
        "__doc__": f"{typename}({arguments})", "__slots__": (), "_fields": fields,
        "_field_defaults": field_defaults,
        "__new__": __new__, "_make": _make, "_replace": _replace, "__repr__": __repr__,
        "_asdict": _asdict, "__getnewargs__": __getnewargs__, "__match_args__": fields,
    }
    for index, name in enumerate(fields):
        namespace[name] = _tuplegetter(index, f"Alias for field number {index}")
    cls = type(typename, (tuple,), namespace)
    cls.__module__ = sys._getframe(1).f_globals.get("__name__", "__main__")
    return cls
