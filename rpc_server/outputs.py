"""Checks on what experts return, before it reaches a caller.

An opinion must be a JSON object that the protocol (msgpack, then JSON in the
pipe and the bridge) can carry: string keys; values that are null, booleans,
64-bit integers, finite floats, strings, lists or objects of the same, nested
at most ``MAX_DEPTH`` deep. Where an expert declares ``opinion_schema`` (JSON
Schema), its ``required`` keys and the top-level ``properties`` types are
checked too. Anything else is that expert's failure for that one input.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32
_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 64 - 1
_JSON_NAMES = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean",
               int: "integer", float: "number", type(None): "null"}


def _value_problem(value: Any, depth: int) -> str | None:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return None
    if kind is int:
        return None if _INT_MIN <= value <= _INT_MAX else "an integer beyond 64 bits"
    if kind is float:
        return None if math.isfinite(value) else f"a non-finite number ({value})"
    if depth >= MAX_DEPTH:
        return f"nesting deeper than {MAX_DEPTH}"
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"a key that is not a string ({type(key).__name__})"
            problem = _value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if kind is list or kind is tuple:
        for item in value:
            problem = _value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"a value of type {kind.__name__}"


def opinion_problem(opinion: Any, schema: dict | None = None) -> str | None:
    """Why ``opinion`` cannot be served (``None`` when it can)."""
    return opinion_checker(schema)(opinion)


#: JSON Schema type names -> the Python types that satisfy them.
_SCHEMA_TYPES = {"object": (dict,), "array": (list, tuple), "string": (str,), "boolean": (bool,),
                 "integer": (int,), "number": (int, float), "null": (type(None),)}


def opinion_checker(schema: dict | None = None):
    """A fast ``opinion -> problem or None`` for one expert's outputs (its schema compiled once)."""
    required = tuple(schema.get("required", ())) if schema else ()
    typed = []
    for key, spec in ((schema or {}).get("properties") or {}).items():
        if isinstance(spec, dict) and "type" in spec:
            names = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
            allowed = tuple(t for name in names for t in _SCHEMA_TYPES.get(name, ()))
            typed.append((key, allowed, spec["type"], "boolean" in names))

    def check(opinion: Any) -> str | None:
        if type(opinion) is not dict:
            return (f"returned {_JSON_NAMES.get(type(opinion), type(opinion).__name__)}, "
                    f"not a JSON object")
        for value in opinion.values():  # the common flat opinion, without recursion
            kind = type(value)
            if kind is str or kind is bool or value is None:
                continue
            if kind is float and math.isfinite(value):
                continue
            if kind is int and _INT_MIN <= value <= _INT_MAX:
                continue
            problem = _value_problem(opinion, 0)
            if problem:
                return f"returned an opinion holding {problem}"
            break
        else:
            if any(type(key) is not str for key in opinion):
                return f"returned an opinion holding {_value_problem(opinion, 0)}"
        for key in required:
            if key not in opinion:
                return f"returned an opinion without its required key {key!r}"
        for key, allowed, named, boolean_ok in typed:
            if key in opinion:
                value = opinion[key]
                if not isinstance(value, allowed) or (type(value) is bool and not boolean_ok):
                    return f"returned an opinion whose {key!r} is not of type {named}"
        return None

    return check
