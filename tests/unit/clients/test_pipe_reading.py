"""How the stage reads lines: what it sends, what it writes through, JSON Lines or one document."""

from __future__ import annotations

import json

import msgpack
import pytest

from expertd.clients.pipe.reading import INCOMPLETE, INVALID, VALUE, classify, parse_line


@pytest.mark.parametrize("text,state", [
    (b'{"a": 1}\n', VALUE), (b"[1, 2]\n", VALUE), (b"42\n", VALUE),
    (b"{\n", INCOMPLETE), (b"\n", INCOMPLETE), (b'{"a": 1,\n', INCOMPLETE),
    (b'{"a":\n  [1,\n', INCOMPLETE),
    (b"garbage\n", INVALID), (b'{"a": "unterminated\n', INVALID), (b'{"a": 1} {"b"\n', INVALID),
    (b'{"a": 1,\n{"b": 2}\n', INVALID), (b"\xff\n", INVALID),
])
def test_classify_the_first_lines(text, state):
    assert classify(text) == state


@pytest.mark.parametrize("raw,problem", [
    (b'{"n": 18446744073709551616}', "integer beyond 64 bits"),
    (b'{"t": "\\ud83d"}', "lone surrogate"),
    (b'{"d": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    (b'{"x": NaN}', "NaN is not JSON"),
    (b'{"x": -Infinity}', "-Infinity is not JSON"),
    (b'{"x": 1e400}', "beyond what a double holds"),
    (b'{"t": "\xff"}', "not UTF-8"),
    (b"[1]", "not a JSON object"),
])
def test_lines_that_cannot_be_sent_say_why(raw, problem):
    item = parse_line(7, raw)
    assert item.passes_through() and problem in item.problem


def test_a_sendable_line_is_encoded_once_as_the_server_reads_it():
    item = parse_line(1, b'{"text": "\\u00e9t\\u00e9", "n": 18446744073709551615, "f": 1.5}\n')
    assert not item.passes_through()
    assert msgpack.unpackb(item.packed, raw=False) == item.doc == json.loads(
        '{"text": "\\u00e9t\\u00e9", "n": 18446744073709551615, "f": 1.5}')


def test_blank_lines_pass_through_without_a_warning():
    item = parse_line(3, b"  \n")
    assert item.passes_through() and item.problem is None
