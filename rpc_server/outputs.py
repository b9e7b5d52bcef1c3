"""Checks on what experts return, before it reaches a caller.

An opinion must be a JSON object that the protocol (msgpack, then JSON in the
pipe and the bridge) can carry: string keys; values that are null, booleans,
64-bit integers, finite floats, strings, lists or objects of the same, nested
at most ``MAX_DEPTH`` deep. Where an expert declares ``opinion_schema`` (JSON
Schema), the opinion must fit it too, ranges (``minimum``/``maximum``)
included; it is validated by jsonschema-rs, compiled once per expert (0.3 us
per sentiment opinion on an idle core, 2.4 us on this project's loaded 2 cores,
about what the structure check costs). Anything else is that expert's failure
for that one input.
"""

from __future__ import annotations

import math
from typing import Any

from expertd.experts.schemas import compile_schema
from expertd.rpc_server.opinion_fast_check import fast_check

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
    """What is wrong with ``opinion`` (``None`` when it can be served); see ``opinion_checker``."""
    return opinion_checker(schema)(opinion)


def schema_validator(schema: dict):
    """``schema`` compiled once (``experts.schemas.compile_schema``); ``ValueError`` if it is
    not a valid JSON Schema."""
    return compile_schema(schema)


def schema_problem(validator, opinion: Any) -> str | None:
    """The first way ``opinion`` breaks the compiled schema, e.g. ``valence: 1e+308 is greater
    than the maximum of 4`` (``None`` when it fits). ``opinion`` must already be JSON-able."""
    if validator.is_valid(opinion):  # the common case: one call, no error objects built
        return None
    for error in validator.iter_errors(opinion):
        where = "/".join(str(part) for part in error.instance_path)
        return f"{where}: {error.message}" if where else error.message
    return None  # pragma: no cover - is_valid and iter_errors disagree


def opinion_checker(schema: dict | None = None):
    """A fast ``opinion -> problem or None`` for one expert's outputs (its schema compiled once).

    The problem describes the value, e.g. ``an opinion holding a non-finite number (nan)``.

    First what the protocol can carry (``_value_problem``: finite numbers, 64-bit
    integers, string keys, bounded depth; JSON Schema cannot say these, and the
    validator would read NaN as null), then the expert's whole ``opinion_schema``
    (required keys, types, enums, ``minimum``/``maximum``, nested objects). The
    same check holds fresh outputs (``batching``) and opinions a document already
    carries before a chain reuses them (``service``). A value outside its
    documented range fails that one input: the server does not clamp an expert's
    answer, which would hide its bug (an expert whose model can overshoot, such as
    a regression head, clamps itself: see ``keras_text.SentimentExpert``).
    """
    validator = schema_validator(schema) if schema else None
    surely_valid = fast_check(schema) if schema else None  # None: no fast path for this schema

    def check(opinion: Any) -> str | None:
        if surely_valid is not None and surely_valid(opinion):
            return None  # the common case, decided in plain Python (rpc_server.opinion_fast_check)
        if type(opinion) is not dict:
            return (f"{_JSON_NAMES.get(type(opinion), type(opinion).__name__)}, "
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
                return f"an opinion holding {problem}"
            break
        else:
            if any(type(key) is not str for key in opinion):
                return f"an opinion holding {_value_problem(opinion, 0)}"
        if validator is not None:
            problem = schema_problem(validator, opinion)
            if problem is not None:
                return f"an opinion that breaks its opinion_schema: {problem}"
        return None

    return check
