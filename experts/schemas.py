"""Compiling an expert's ``opinion_schema`` (JSON Schema) once, with jsonschema-rs.

The experts file loader compiles each expert's schema when it builds the
expert (a schema that is not JSON Schema is then a config error naming the
expert, before anything is served); the server's output check
(``rpc_server.outputs``) holds every opinion to the compiled schema.
"""

from __future__ import annotations

from typing import Any


def compile_schema(schema: Any):
    """``schema`` compiled (JSON Schema 2020-12 unless it names another draft).

    Raises ``ValueError`` naming the problem if ``schema`` is not a valid JSON Schema.
    """
    import jsonschema_rs  # here, not at module level: importing the experts stays light

    if not isinstance(schema, dict):
        raise ValueError(f"opinion_schema must be a JSON Schema object (a dict), "
                         f"not {type(schema).__name__}")
    try:
        return jsonschema_rs.validator_for(schema)
    except ValueError as exc:  # jsonschema_rs.ValidationError is a ValueError
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"opinion_schema is not a valid JSON Schema: {first}") from None
