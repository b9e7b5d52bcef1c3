"""Decode, walk and encode big zerorpc events a slice at a time, yielding the gevent loop.

A 100,000-document call is a ~10 MB msgpack event; decoding it, checking and
merging its documents and encoding its answer each hold the one gevent loop
for tens to hundreds of milliseconds when done in one piece, and every other
call (a one-document call, a heartbeat) waits. The functions here do the same
work ``SLICE`` items at a time with ``gevent.sleep(0)`` in between (msgpack
holds the GIL while it works, so a native thread would not help). The bytes
on the wire are exactly what zerorpc reads and writes: stock clients see no
difference.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import gevent
import msgpack

#: Items (documents, answers) handled between two yields of the gevent loop.
SLICE = 64
#: A frame of at least this many bytes is decoded apart from the dispatcher, a slice at a time.
BIG_FRAME = 128 * 1024


def cooperatively(items: Iterable, every: int = SLICE) -> Iterator:
    """Iterate over ``items``, letting other greenlets run after every ``every`` items."""
    if isinstance(items, (list, tuple, range)):  # a slice at a time: no per-item bookkeeping
        for start in range(0, len(items), every):
            if start:
                gevent.sleep(0)
            yield from items[start:start + every]
        return
    for count, item in enumerate(items, 1):
        yield item
        if count % every == 0:
            gevent.sleep(0)


def _array_at(view: memoryview, position: int) -> bool:
    """Whether the msgpack object starting at ``position`` is an array."""
    if position >= len(view):
        return False
    first = view[position]
    return 0x90 <= first <= 0x9F or first in (0xDC, 0xDD)


def unpack(blob, every: int = SLICE) -> Any:
    """``msgpack.unpackb(blob, raw=False, strict_map_key=False)``, yielding as it goes.

    Made for a zerorpc event ``[header, name, args]``: each array among the
    ``args`` (a list of documents) is decoded item by item. Anything of
    another shape is decoded in one piece, exactly as ``unpackb`` would.
    """
    view = memoryview(blob).cast("B")
    if len(view) < 2 or view[0] != 0x93:  # not a fixarray of 3: decode in one piece
        return msgpack.unpackb(view, raw=False, strict_map_key=False)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(view))
    unpacker.feed(view)
    try:
        return _unpack_event(unpacker, view, every)
    except msgpack.OutOfData:
        raise ValueError("Unpack failed: incomplete input") from None  # as unpackb says


def _unpack_event(unpacker: msgpack.Unpacker, view: memoryview, every: int) -> list:
    unpacker.read_array_header()
    header = unpacker.unpack()
    name = unpacker.unpack()
    if not _array_at(view, unpacker.tell()):
        args = unpacker.unpack()
    else:
        args = []
        for _ in range(unpacker.read_array_header()):
            if not _array_at(view, unpacker.tell()):
                args.append(unpacker.unpack())
                continue
            count = unpacker.read_array_header()
            items = []
            for index in range(count):
                items.append(unpacker.unpack())
                if index % every == every - 1:
                    gevent.sleep(0)
            args.append(items)
    if unpacker.tell() != len(view):
        raise msgpack.ExtraData([header, name, args], bytes(view[unpacker.tell():unpacker.tell() + 16]))
    return [header, name, args]


def is_big(args: Any, every: int = SLICE) -> bool:
    """Whether an event's ``args`` hold a list long enough to be worth encoding in slices."""
    return isinstance(args, (list, tuple)) and any(
        isinstance(arg, (list, tuple)) and len(arg) > every for arg in args)


def longest(args: Any) -> int:
    """The length of the longest list among an event's ``args`` (0 if none)."""
    if not isinstance(args, (list, tuple)):
        return 0
    return max((len(arg) for arg in args if isinstance(arg, (list, tuple))), default=0)


def pack(header: dict, name: str, args: Any, every: int = SLICE) -> bytes:
    """The bytes of zerorpc's ``Event.pack()`` for ``(header, name, args)``, yielding as it goes."""
    packer = msgpack.Packer(use_bin_type=True)  # autoreset: each call returns its bytes
    if not isinstance(args, (list, tuple)):
        return packer.pack((header, name, args))
    parts = [packer.pack_array_header(3), packer.pack(header), packer.pack(name),
             packer.pack_array_header(len(args))]
    for arg in args:
        if not (isinstance(arg, (list, tuple)) and len(arg) > every):
            parts.append(packer.pack(arg))
            continue
        parts.append(packer.pack_array_header(len(arg)))
        for start in range(0, len(arg), every):
            if start:
                gevent.sleep(0)
            # One C call per slice: a slice packed as an array, less its array header.
            chunk = arg[start:start + every]
            parts.append(packer.pack(chunk)[len(packer.pack_array_header(len(chunk))):])
    return b"".join(parts)
