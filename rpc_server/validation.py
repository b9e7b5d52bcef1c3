"""Checks on what callers send, before anything reaches an expert."""

from __future__ import annotations

from typing import Any

import gevent

from expertd.rpc_server.errors import BadArguments, InvalidDocument, TextTooLong, TooManyDocuments

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number",
               float: "number", bool: "boolean", type(None): "null", bytes: "binary"}


def json_type(value: Any) -> str:
    """The JSON name of a value's type (``object``, ``array``, ...)."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def field_value(doc: Any, field: str, input_type: type | None, max_text_bytes: int,
                where: str = "document") -> Any:
    """Return ``doc[field]`` after checking the document, the field and its size.

    ``field=None`` (an expert that reads the whole document): a shallow copy of the document.
    """
    if not isinstance(doc, dict):
        raise InvalidDocument(f"{where} must be a JSON object, got {json_type(doc)}")
    if field is None:
        return dict(doc)
    try:
        value = doc[field]
    except KeyError:
        raise InvalidDocument(f"{where} has no {field!r} field") from None
    if input_type is str:
        if not isinstance(value, str):
            raise InvalidDocument(
                f"{where} field {field!r} must be a string, got {json_type(value)}")
        # A str of n code points is at most 4n bytes in UTF-8; encode only when in doubt.
        if len(value) * 4 > max_text_bytes:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > max_text_bytes:
                raise TextTooLong(f"{where} field {field!r} is {size} bytes; "
                                  f"the limit is {max_text_bytes} bytes")
    elif input_type is not None and not isinstance(value, input_type):
        raise InvalidDocument(f"{where} field {field!r} must be of type "
                              f"{input_type.__name__}, got {json_type(value)}")
    return value


def field_values(docs: list, field: str | None, input_type: type | None, max_text_bytes: int,
                 what: str = "docs", every: int = 64) -> list:
    """``[field_value(doc, ..., where=f"docs[{i}]") for i, doc in enumerate(docs)]``, faster.

    The common document (a dict whose text field is a str short enough for
    certain) is read inline; any other goes through ``field_value``, which
    returns the same value or raises the same error. The gevent loop is let go
    every ``every`` documents.
    """
    plain_text = field is not None and input_type is str
    safe_chars = max_text_bytes // 4  # at most 4 bytes a code point in UTF-8
    values = []
    append = values.append
    for start in range(0, len(docs), every):
        if start:
            gevent.sleep(0)
        for i, doc in enumerate(docs[start:start + every], start):
            if plain_text and type(doc) is dict:
                value = doc.get(field)
                if type(value) is str and len(value) <= safe_chars:
                    append(value)
                    continue
            append(field_value(doc, field, input_type, max_text_bytes, where=f"{what}[{i}]"))
    return values


def expert_names(names: Any) -> list[str] | None:
    """Check the ``names`` argument of ``opinions``: a list of strings, or empty/null for all."""
    if names is None or names == [] or names == ():
        return None
    if isinstance(names, str):
        return [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise BadArguments(f"names must be a list of expert names, got {json_type(names)}")
    return list(dict.fromkeys(names))


def document_list(docs: Any, what: str = "docs", limit: int | None = None) -> list:
    """Check that ``docs`` is a list (of anything: each item is checked later), of at most ``limit``."""
    if not isinstance(docs, (list, tuple)):
        raise BadArguments(f"{what} must be a list of documents, got {json_type(docs)}")
    if limit is not None and len(docs) > limit:
        raise TooManyDocuments(f"{what} holds {len(docs)} documents; a call may carry at most "
                               f"{limit} (max_batch_docs): split it into smaller calls")
    return list(docs)
