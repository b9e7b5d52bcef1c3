"""How the stage reads lines: what it sends, what it writes through, JSON Lines or one document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgpack
import pytest

from expertd.clients.pipe.reading import (INCOMPLETE, INVALID, MAX_DOCUMENT_BYTES, VALUE, LineReader,
                                          classify, parse_line, parse_lines)


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


def test_a_stop_request_ends_a_wait_for_input_and_keeps_what_was_read():
    # A real pipe whose writer stays open: the reader waits for more input until the
    # wake descriptor says a stop was asked for; what it read comes out, the cut-off last
    # line as it came (no newline added).
    import os
    import threading

    from expertd.clients.pipe.reading import LineReader

    data_read, data_write = os.pipe()
    wake_read, wake_write = os.pipe()
    stop = []
    reader = LineReader(data_read, wake_fd=wake_read, stop_requested=lambda: bool(stop))
    os.write(data_write, b'{"a": 1}\n{"a": 2}\n{"a"')
    assert reader.readline() == b'{"a": 1}\n'
    assert reader.readline() == b'{"a": 2}\n'


    def signal_arrives() -> None:  # as the stage's handler and signal.set_wakeup_fd do
        stop.append(True)
        os.write(wake_write, b"\x02")

    timer = threading.Timer(0.3, signal_arrives)
    timer.start()
    assert reader.readline() == b'{"a"' and reader.stopped  # it was waiting for the rest
    timer.join()
    assert reader.readline() is None
    for fd in (data_read, data_write, wake_read, wake_write):
        os.close(fd)


@pytest.mark.parametrize("line,suggested", [
    (b"I love it\n", '{"text": "I love it"}'),
    (b"[1, 2]\n", '{"text": "I love it"}'),
    (b"x" * 100 + b"\n", '{"text": "' + "x" * 39 + '\u2026"}'),
])
def test_a_line_that_is_not_an_object_gets_a_suggestion(line, suggested):
    assert f"send one JSON object per line, such as {suggested}" in parse_line(1, line).problem


def test_a_draining_reader_reads_on_to_the_end_after_a_stop():
    # stdin is a pipe: after a stop (Ctrl-C) the reader reads what the writer still
    # writes, to the end of the input; a writer that goes quiet without closing the
    # pipe stops it after ``quiet_s``.
    import os

    from expertd.clients.pipe.reading import LineReader, drains_after_stop

    data_read, data_write = os.pipe()
    wake_read, wake_write = os.pipe()
    assert drains_after_stop(data_read)
    reader = LineReader(data_read, wake_fd=wake_read, stop_requested=lambda: True,
                        drain=True, quiet_s=0.3)
    os.write(data_write, b'{"a": 1}\n')
    os.write(wake_write, b"\x02")  # the signal
    assert reader.readline() == b'{"a": 1}\n'
    os.write(data_write, b'{"a": 2}\n')
    assert reader.readline() == b'{"a": 2}\n' and not reader.stopped
    os.write(data_write, b'{"a"')
    assert reader.readline() == b'{"a"' and reader.stopped  # quiet for 0.3 s: stops
    assert reader.readline() is None
    for fd in (data_read, data_write, wake_read, wake_write):
        os.close(fd)


def test_a_file_or_terminal_is_not_drained(tmp_path):
    import os

    from expertd.clients.pipe.reading import drains_after_stop

    path = tmp_path / "in.jsonl"
    path.write_bytes(b"{}\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not drains_after_stop(fd)
    finally:
        os.close(fd)


# -- many lines at once: the short path gives what parse_line gives ------------------

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "pipe"
#: Lines the short path takes, and lines near it that it must hand to parse_line.
TRICKY = [b'{"text": "I love it"}\n', b'{"a": 1}', b'{"a": 1} \n', b' {"a": 1}\n', b'{"a": 1}\r\n',
          b"{}\n", b'{"opinions": {}}\n', b'{"text": "x", "errors": 1}\n',
          b'{"text": "x", "versions": {}}\n', b'{"recomputed": 1, "t": 2}\n',
          b'{"a": 1}{"b": 2}\n', b'{"a": 1}\n\n', b'{"t": "\\u00e9 \xc3\xa9 \\ud83d\\ude00"}\n',
          b'{"n": 18446744073709551616}\n', b'{"t": "\\ud83d"}\n', b'{"x": NaN}\n',
          b'{"x": 1e400}\n', b'{"t": "\xff"}\n', b"[1]\n", b"\n", b"   \n", b"{\n",
          b'{"d": ' + b"[" * 3000 + b"]" * 3000 + b"}\n",
          b'{"big": "' + b"x" * (MAX_DOCUMENT_BYTES + 1) + b'"}\n']


def corpus_lines() -> list[bytes]:
    lines = list(TRICKY)
    for path in sorted(CORPUS.glob("*.jsonl")):
        lines += [line + b"\n" for line in path.read_bytes().split(b"\n")[:-1]]
    return lines


def test_parse_lines_gives_each_line_what_parse_line_gives_it():
    lines = corpus_lines()
    items = parse_lines(5, lines)
    assert len(items) == len(lines)
    for number, (raw, item) in enumerate(zip(lines, items), 5):
        one = parse_line(number, raw)
        assert (item.number, item.raw, item.doc, item.packed, item.problem) == (
            one.number, one.raw, one.doc, one.packed, one.problem), raw[:80]
        # plain: the answer's JSON text is spliced in before the closing brace
        assert item.plain == (raw[:1] == b"{" and raw[-2:] == b"}\n" and bool(item.doc) and not (
            {"opinions", "errors", "recomputed", "versions"} & set(item.doc))
            and item.doc == json.loads(raw)), raw[:80]
    assert sum(item.plain for item in items) >= 3


@pytest.mark.parametrize("data, most, expected", [
    (b'{"a": 1}\n{"b": 2}\n{"c"', 5, [b'{"a": 1}\n', b'{"b": 2}\n']),
    (b'1\n2\n3\n4\n', 2, [b"1\n", b"2\n"]),
    (b'1\r2\n3\r\n4\n5', 3, [b"1\r2\n", b"3\r\n", b"4\n"]),
    (b'1\r2\n3\r\n4\n5', 1, [b"1\r2\n"]),
    (b"no newline at the end", 9, [b"no newline at the end"]),
    (b"", 9, []),
])
def test_readlines_takes_whole_lines_and_leaves_the_rest(data, most, expected):
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    try:
        reader = LineReader(read)
        lines = reader.readlines(most)
        assert lines == expected
        rest = b"".join(iter(lambda: reader.readline() or b"", b""))
        assert b"".join(lines) + rest == data
    finally:
        os.close(read)
