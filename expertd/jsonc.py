"""JSON through CPython's C accelerator ``_json``, without importing ``json``.

``import json`` compiles six regular expressions and imports ``re`` (with
``enum`` and ``functools``) even though CPython decodes and encodes with the
C scanner and encoder of ``_json``; the one-document pipe stage and
``expertd.spec`` pay that at every start (bench/RESULTS-startup.md). This
module builds the same C scanner and encoder from ``_json`` directly: a
valid document decodes to what ``json.loads`` returns, a value encodes to
what ``json.dumps`` writes (the separators and options below). A document
that is not valid JSON, and any Python without ``_json``, goes to ``json``
itself (imported then), so its errors are ``json``'s own
(``json.JSONDecodeError`` with its message and position): the C scanner reports a
syntax error through ``json.decoder`` and cannot while that is not imported.
"""

from __future__ import annotations

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

#: What JSON counts as whitespace around a value (json's ``WHITESPACE``).
WHITESPACE = " \t\n\r"
#: ``Decoder.scan``'s answer for a text that is not one JSON value.
_NOT_JSON = object()


def _float_constant(name: str) -> float:
    """``NaN``, ``Infinity``, ``-Infinity`` as ``json.loads`` reads them."""
    return float(name)


class Decoder:
    """``json.JSONDecoder(parse_float=..., parse_constant=...).decode`` on the C scanner."""

    def __init__(self, parse_float=float, parse_constant=_float_constant) -> None:
        # The attributes ``_json.make_scanner`` reads (those of json.JSONDecoder).
        self.strict = True
        self.object_hook = self.object_pairs_hook = None
        self.parse_float, self.parse_int, self.parse_constant = parse_float, int, parse_constant
        self.memo: dict = {}
        self.scan_once = _json.make_scanner(self) if _json is not None else None
        self._json_decoder = None

    def decode(self, text: str):
        """The value of the JSON text ``text`` (whitespace around it allowed)."""
        value = self.scan(text)
        return self.json_decoder().decode(text) if value is _NOT_JSON else value

    def scan(self, text: str):
        """The value of ``text`` if it is one JSON value, else ``_NOT_JSON``."""
        if self.scan_once is not None:
            start = len(text) - len(text.lstrip(WHITESPACE)) if text[:1] in WHITESPACE else 0
            try:
                value, end = self.scan_once(text, start)
            except Exception:  # noqa: BLE001 - json raises it again, as json would
                # Not JSON here, or a hook refused a value. The C scanner reports a syntax
                # error through ``json.decoder``, which is not imported yet (a SystemError).
                return _NOT_JSON
            if end == len(text) or not text[end:].strip(WHITESPACE):
                return value
        return _NOT_JSON

    def json_decoder(self):
        """``json.JSONDecoder`` with the same hooks (imports ``json``)."""
        if self._json_decoder is None:
            import json

            kwargs = {} if self.parse_constant is _float_constant else \
                {"parse_constant": self.parse_constant}
            self._json_decoder = json.JSONDecoder(parse_float=self.parse_float, **kwargs)
        return self._json_decoder


_DECODER = Decoder()


def loads(text: str):
    """``json.loads(text)`` for a ``str``."""
    value = _DECODER.scan(text)
    if value is _NOT_JSON:
        import json

        return json.loads(text)  # json's own error (a BOM has one of its own)
    return value


def _not_serializable(value):
    import json

    return json.JSONEncoder().default(value)  # raises json's own TypeError


def encoder(separators: tuple[str, str] = (", ", ": ")):
    """A function that writes a value as ``json.dumps(value, ensure_ascii=False,
    allow_nan=False, separators=separators)`` does (``ValueError`` for NaN or a circular
    value, ``TypeError`` for a value JSON has no form for)."""
    if _json is None:  # pragma: no cover
        import json

        plain = json.JSONEncoder(ensure_ascii=False, separators=separators, allow_nan=False)
        return plain.encode
    markers: dict = {}  # ids of the containers being encoded (json's circular check)
    item_separator, key_separator = separators
    c_encode = _json.make_encoder(markers, _not_serializable, _json.encode_basestring, None,
                                  key_separator, item_separator, False, False, False)
    quote = _json.encode_basestring

    def encode(value) -> str:
        if isinstance(value, str):
            return quote(value)
        try:
            return "".join(c_encode(value, 0))
        except BaseException:
            markers.clear()  # a failed encoding leaves its containers' ids behind
            raise

    return encode


#: ``json.dumps(value, ensure_ascii=False, allow_nan=False)``.
dumps = encoder()
