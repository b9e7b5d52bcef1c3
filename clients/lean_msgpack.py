"""msgpack for a stage's first messages, without importing ``msgpack`` (and ``datetime``).

``import msgpack`` costs a one-document pipe stage about 3 ms at every start
(its ``msgpack.ext`` imports ``datetime`` and ``struct``; bench/RESULTS-startup.md),
more than the stage spends encoding and decoding everything it sends and
receives. This module speaks the part of msgpack those messages use, in
plain Python: ``packb`` writes ``None``, ``bool``, ``int`` (up to 64 bits),
``float``, ``str``, ``bytes``, ``list``, ``tuple`` and ``dict`` exactly as
``msgpack.packb(value, use_bin_type=True)`` does (the same bytes), and
``unpackb`` reads the same formats (plus float 32) as ``msgpack.unpackb(data)``
does, with either ``strict_map_key``. Used with other options, and for every
other name of msgpack's (``Unpacker``, ``ExtType``, its exceptions), it is the
real msgpack.

Anything else goes to the real ``msgpack`` (imported then), so what it
returns or raises is msgpack's own: another type (a subclass included), an
integer beyond 64 bits, a lone surrogate, deep nesting, an extension type,
truncated or garbled input, extra bytes. So does everything once ``msgpack``
is imported (it is faster), and once this process has encoded or decoded
``PURE_BUDGET`` bytes here: a JSON Lines stream pays for the import once and
then runs at msgpack's speed, a one-document stage never pays for it.
"""

from __future__ import annotations

import sys

#: Bytes this process encodes and decodes in plain Python before it imports ``msgpack``
#: (a few milliseconds of work, about what the import costs).
PURE_BUDGET = 32 * 1024
#: Most parts (headers, strings, numbers) of one value encoded here: a larger value goes to
#: msgpack (so a huge document costs at most this much work before it does).
MAX_PARTS = 4096
#: Deepest nesting handled here (msgpack's own limits are far deeper; deeper goes to it).
MAX_DEPTH = 64

_spent = [0]  # bytes encoded and decoded here so far (a list: no ``global``)
_LITTLE = sys.byteorder == "little"


class NotLean(Exception):
    """A value or a message outside what this module handles: the real msgpack is asked."""


def _msgpack():
    """The real ``msgpack`` module (imported on first use)."""
    import msgpack

    return msgpack


def _pure_allowed(size: int = 0) -> bool:
    """True while plain Python is cheaper than importing msgpack (see ``PURE_BUDGET``)."""
    return "msgpack" not in sys.modules and _spent[0] + size <= PURE_BUDGET


# -- encoding ---------------------------------------------------------------------------

def _head(size: int, fix: int, fix_limit: int, codes: bytes) -> bytes:
    """The header of a str, bin, array or map of ``size`` entries: a fix form below
    ``fix_limit`` (``fix`` is 0 for bin, which has none), else the 8-bit (if any), 16-bit
    or 32-bit form, whose first bytes are ``codes``."""
    if size < fix_limit:
        return bytes((fix | size,))
    if len(codes) == 3:
        if size < 0x100:
            return bytes((codes[0], size))
        codes = codes[1:]
    if size < 0x10000:
        return bytes((codes[0],)) + size.to_bytes(2, "big")
    if size < 0x100000000:
        return bytes((codes[1],)) + size.to_bytes(4, "big")
    raise NotLean("too long")


def _int(value: int) -> bytes:
    if value >= 0:
        if value < 0x80:
            return bytes((value,))
        if value < 0x100:
            return bytes((0xCC, value))
        if value < 0x10000:
            return b"\xcd" + value.to_bytes(2, "big")
        if value < 0x100000000:
            return b"\xce" + value.to_bytes(4, "big")
        if value < 0x10000000000000000:
            return b"\xcf" + value.to_bytes(8, "big")
        raise NotLean("integer beyond 64 bits")
    if value >= -0x20:
        return bytes((value & 0xFF,))
    if value >= -0x80:
        return b"\xd0" + value.to_bytes(1, "big", signed=True)
    if value >= -0x8000:
        return b"\xd1" + value.to_bytes(2, "big", signed=True)
    if value >= -0x80000000:
        return b"\xd2" + value.to_bytes(4, "big", signed=True)
    if value >= -0x8000000000000000:
        return b"\xd3" + value.to_bytes(8, "big", signed=True)
    raise NotLean("integer beyond 64 bits")


def _float(value: float) -> bytes:
    """Float 64, big-endian (through a memoryview cast: no ``struct``)."""
    cell = bytearray(8)
    memoryview(cell).cast("d")[0] = value
    return b"\xcb" + (bytes(reversed(cell)) if _LITTLE else bytes(cell))


def _pack(value, out: list, depth: int) -> None:
    kind = type(value)
    if kind is str:
        data = value.encode("utf-8")  # a lone surrogate raises: msgpack says it its way
        if len(data) > PURE_BUDGET:
            raise NotLean("long")
        out.append(_head(len(data), 0xA0, 32, b"\xd9\xda\xdb"))
        out.append(data)
    elif kind is dict:
        if depth >= MAX_DEPTH or len(out) > MAX_PARTS:
            raise NotLean("deep or large")
        out.append(_head(len(value), 0x80, 16, b"\xde\xdf"))
        for key, item in value.items():
            _pack(key, out, depth + 1)
            _pack(item, out, depth + 1)
    elif kind is list or kind is tuple:
        if depth >= MAX_DEPTH or len(out) > MAX_PARTS:
            raise NotLean("deep or large")
        out.append(_head(len(value), 0x90, 16, b"\xdc\xdd"))
        for item in value:
            _pack(item, out, depth + 1)
    elif kind is int:
        out.append(_int(value))
    elif kind is float:
        out.append(_float(value))
    elif value is None:
        out.append(b"\xc0")
    elif value is True:
        out.append(b"\xc3")
    elif value is False:
        out.append(b"\xc2")
    elif kind is bytes:
        if len(value) > PURE_BUDGET:
            raise NotLean("long")
        out.append(_head(len(value), 0, 0, b"\xc4\xc5\xc6"))
        out.append(value)
    else:
        raise NotLean(kind.__name__)


def pure_packb(value) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)`` in plain Python; ``NotLean`` for a value
    outside the types and sizes above, or any error (the real msgpack then says what)."""
    out: list = []
    try:
        _pack(value, out, 0)
    except NotLean:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a lone surrogate: msgpack's error is the one raised
        raise NotLean(str(exc)) from None
    return b"".join(out)


def _lean_packing(options: dict) -> bool:
    """True for the options this module packs with: msgpack's defaults (``use_bin_type=True``)."""
    return not options or options == {"use_bin_type": True}


def _lean_pack(value) -> bytes | None:
    """``value`` packed in plain Python (counted against the lean budget), or None when that is
    not allowed any more or the value needs the real msgpack."""
    if not _pure_allowed():
        return None
    try:
        data = pure_packb(value)
    except (NotLean, RecursionError):
        return None
    _spent[0] += len(data)
    return data


def packb(value, **options) -> bytes:
    """``msgpack.packb(value, **options)``: the same bytes, or msgpack's error (in plain Python
    for the default options, ``use_bin_type=True``, while that is cheaper)."""
    data = _lean_pack(value) if _lean_packing(options) else None
    return data if data is not None else _msgpack().packb(value, **options)


class Packer:
    """``msgpack.Packer(**options)``'s ``pack``: plain Python while ``packb`` would use it,
    then a real ``msgpack.Packer`` for good (reused, as msgpack's own is)."""

    def __init__(self, **options) -> None:
        """Only the default options (``use_bin_type=True``) are lean; others are msgpack's
        from the start (and so is every other method of msgpack's Packer)."""
        self._options = options
        self._real = None
        if not _lean_packing(options):
            self._use_real()

    def _use_real(self):
        real = self._real = _msgpack().Packer(**self._options)
        self.pack = real.pack  # from now on each call goes straight to msgpack's
        return real

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._real or self._use_real(), name)

    def pack(self, value) -> bytes:
        """The msgpack encoding of ``value`` (msgpack's error for what it cannot encode)."""
        data = _lean_pack(value)
        return data if data is not None else self._use_real().pack(value)


# -- decoding ---------------------------------------------------------------------------

def _float_at(data: bytes, pos: int, size: int) -> float:
    raw = data[pos:pos + size]
    if len(raw) != size:
        raise NotLean("truncated")
    return memoryview(raw[::-1] if _LITTLE else raw).cast("d" if size == 8 else "f")[0]


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise NotLean("truncated")
    return int.from_bytes(data[pos:pos + size], "big")


def _sint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise NotLean("truncated")
    return int.from_bytes(data[pos:pos + size], "big", signed=True)


#: Byte -> (what, width of its length or value field) for the formats with a field.
_SIZED = {0xCC: ("uint", 1), 0xCD: ("uint", 2), 0xCE: ("uint", 4), 0xCF: ("uint", 8),
          0xD0: ("int", 1), 0xD1: ("int", 2), 0xD2: ("int", 4), 0xD3: ("int", 8),
          0xCA: ("float", 4), 0xCB: ("float", 8),
          0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4),
          0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4),
          0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4)}
#: The map keys read here: those msgpack reads as they are (``strict_map_key=False``), and
#: the only ones it accepts with ``strict_map_key=True`` (its default).
_ANY_KEYS = (str, int, float, bool, bytes, type(None))
_STRICT_KEYS = (str, bytes)


def _unpack(data: bytes, pos: int, depth: int, keys: tuple = _ANY_KEYS):
    """The value that starts at ``pos``, and where the next one starts."""
    if pos >= len(data):
        raise NotLean("truncated")
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    if byte >= 0xE0:
        return byte - 0x100, pos
    if 0xA0 <= byte < 0xC0:
        what, size = "str", byte & 0x1F
    elif 0x90 <= byte < 0xA0:
        what, size = "array", byte & 0x0F
    elif byte < 0x90:
        what, size = "map", byte & 0x0F
    elif byte == 0xC0:
        return None, pos
    elif byte == 0xC2:
        return False, pos
    elif byte == 0xC3:
        return True, pos
    else:
        form = _SIZED.get(byte)
        if form is None:  # an extension type, or a byte msgpack never writes
            raise NotLean(f"format 0x{byte:02x}")
        what, width = form
        if what == "uint":
            return _uint(data, pos, width), pos + width
        if what == "int":
            return _sint(data, pos, width), pos + width
        if what == "float":
            return _float_at(data, pos, width), pos + width
        size = _uint(data, pos, width)
        pos += width
    if what == "str" or what == "bin":
        end = pos + size
        if end > len(data):
            raise NotLean("truncated")
        raw = data[pos:end]
        return (raw.decode("utf-8") if what == "str" else bytes(raw)), end
    if depth >= MAX_DEPTH:
        raise NotLean("deep")
    if size > len(data) - pos:  # each entry takes a byte at least: garbled
        raise NotLean("truncated")
    if what == "array":
        items = []
        for _ in range(size):
            item, pos = _unpack(data, pos, depth + 1, keys)
            items.append(item)
        return items, pos
    mapping = {}
    for _ in range(size):
        key, pos = _unpack(data, pos, depth + 1, keys)
        if type(key) not in keys:
            raise NotLean("a key msgpack would read its own way, or refuse")
        mapping[key], pos = _unpack(data, pos, depth + 1, keys)
    return mapping, pos


def pure_unpackb(data: bytes, strict_map_key: bool = False):
    """``msgpack.unpackb(data, raw=False, strict_map_key=strict_map_key)`` in plain Python;
    ``NotLean`` for a message outside the formats above, or one msgpack would refuse."""
    try:
        value, end = _unpack(data, 0, 0, _STRICT_KEYS if strict_map_key else _ANY_KEYS)
    except NotLean:
        raise
    except Exception as exc:  # noqa: BLE001 - bad UTF-8 and the like: msgpack's error is the one raised
        raise NotLean(str(exc)) from None
    if end != len(data):
        raise NotLean("extra bytes")
    return value


def unpackb(data: bytes, **options):
    """``msgpack.unpackb(data, **options)``: the same value, or msgpack's error (in plain
    Python for ``raw=False`` and either ``strict_map_key``, while that is cheaper)."""
    strict = options.get("strict_map_key", True)  # msgpack's defaults
    if (not options.get("raw", False) and not options.keys() - {"raw", "strict_map_key"}
            and _pure_allowed(len(data))):
        try:
            value = pure_unpackb(bytes(data), strict_map_key=strict)
        except (NotLean, RecursionError):
            pass
        else:
            _spent[0] += len(data)
            return value
    return _msgpack().unpackb(data, **options)


def __getattr__(name: str):
    """Anything else of msgpack's (``Unpacker``, ``ExtType``, its exceptions) is msgpack's own."""
    return getattr(_msgpack(), name)
