"""The ``as_json`` option: a line the pipe stage writes from the server's JSON text of an answer
is byte for byte the line it writes from the answer itself (as it did before the option).

The answer goes through msgpack both ways, as on the wire; the server's side is
``chain_runner.json_answer``, the stage's ``output.answered_line``.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import msgpack
import pytest

from expertd.clients.pipe.output import Output, Progress, answered_line
from expertd.clients.pipe.pipelining import Pipeline, Sent
from expertd.clients.pipe.reading import parse_line, parse_lines
from expertd.rpc_server.chain_runner import json_answer

SENTIMENT = {"valence": 1.9443, "label": "positive", "confidence": 0.9526}
GENRE = {"label": "product_review", "probabilities": {
    "tweet": 0.007, "movie_review": 5e-324, "product_review": 0.992, "news_editorial": 1e308}}
FLOATS = {"tiny": 2.2250738585072014e-308, "big": 1.7976931348623157e308, "neg_zero": -0.0,
          "ulp": 1.0000000000000002, "third": 1 / 3, "int": 2 ** 63 - 1, "neg": -(2 ** 63),
          "exp": 1e22, "small": 1e-7, "whole": 3.0}
ERROR = {"name": "InvalidDocument", "message": "field 'text' is missing: send {\"text\": ...}"}

#: (input line, the server's answer to it, the names asked)
CASES = [
    ('{"id": 1, "text": "I love this"}\n', {"opinions": {"sentiment": SENTIMENT}}, ("sentiment",)),
    ('{"text":"caf\\u00e9 déjà vu 日本語 😀","n":1e5}\n',
     {"opinions": {"sentiment": dict(SENTIMENT, label="é\u2028\u2029\"\\\t\x00\x7f😀")}},
     ("sentiment",)),
    ('  {"a": {"b": [1, 2.50, {"c": null}]}, "text": "x"}  \r\n',
     {"opinions": {"sentiment": SENTIMENT, "genre": GENRE}}, ("sentiment", "genre")),
    ('{"text": "floats"}', {"opinions": {"numbers": FLOATS}}, ("numbers",)),
    ('{"id": 2}\n', {"opinions": {}, "errors": {"sentiment": ERROR}}, ("sentiment",)),
    ('{"id": 3, "text": "half"}\n', {"opinions": {"sentiment": SENTIMENT},
                                     "errors": {"genre": ERROR}}, ("sentiment", "genre")),
    ('{"text": "v"}\n', {"opinions": {"sentiment": SENTIMENT}, "versions": {"sentiment": "2"}},
     ("sentiment",)),
    ('{"text": "r"}\n', {"opinions": {"sentiment": SENTIMENT},
                         "recomputed": {"sentiment": "not reused: valence: 1e+308 is greater"}},
     ("sentiment",)),
    # a document that carries opinions of its own (a later stage): merged
    ('{"text": "later", "opinions": {"vader": {"compound": 0.5}}, "z": 1}\n',
     {"opinions": {"vader": {"compound": 0.5}, "sentiment": SENTIMENT}}, ("sentiment",)),
    ('{"text": "old errors", "errors": {"sentiment": {"name": "X", "message": "y"}}}\n',
     {"opinions": {"sentiment": SENTIMENT}}, ("sentiment",)),
    ('{"text": "versions", "versions": {"genre": "1"}}\n',
     {"opinions": {"sentiment": SENTIMENT}, "versions": {"genre": "1", "sentiment": "2"}},
     ("sentiment",)),
    ('{}\n', {"opinions": {"sentiment": SENTIMENT}}, ("sentiment",)),
    # an opinion that holds the text of a key: still a whole, correct line
    ('{"text": "t"}\n', {"opinions": {"sentiment": {"label": '"errors": "recomputed": '}}},
     ("sentiment",)),
    ('{"text": "nested key"}\n', {"opinions": {"odd": {"errors": 0}}}, ("odd",)),
]


def wire(value):
    """``value`` as the stage receives it (msgpack, as zerorpc sends it)."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


@pytest.mark.parametrize("line, answer, names", CASES)
def test_a_line_written_from_json_text_is_the_line_written_from_the_answer(line, answer, names):
    raw = line.encode("utf-8")
    text = json_answer(dict(answer))
    assert isinstance(text, bytes) and json.loads(text) == answer
    expected = answered_line(parse_line(1, raw), wire(answer), names)
    got = answered_line(parse_line(1, raw), wire(text), names)
    assert got == expected
    json.loads(got[0])  # and it is JSON
    # and the stage's own loop (which splices a plain line's answer without answered_line)
    assert stage_writes(raw, wire(text), names) == expected[0]


def stage_writes(raw: bytes, answer, names) -> bytes:
    """What ``Pipeline.write`` writes for line ``raw`` answered ``answer``."""
    stdout, said = io.BytesIO(), []
    stage = SimpleNamespace(options=SimpleNamespace(names=names), connector=None, reader=None,
                            output=Output(stdout), progress=Progress(io.StringIO(), False),
                            incomplete=0, warn=said.append, report_errors=lambda n, d: None,
                            signum=None)
    items = parse_lines(1, [raw])
    stage.output.pending.extend(items)
    Pipeline(stage).write(Sent(items), [answer])
    return stdout.getvalue()


@pytest.mark.parametrize("opinion", [{"x": float("nan")}, {"x": float("inf")}, {"x": "\ud800"}])
def test_an_answer_json_cannot_hold_stays_an_object_and_the_stage_says_why(opinion):
    answer = {"opinions": {"odd": opinion}}
    assert json_answer(answer) is answer
    with pytest.raises((ValueError, UnicodeEncodeError)):
        answered_line(parse_line(1, b'{"text": "t"}\n'), answer, ("odd",))

