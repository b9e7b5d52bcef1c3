"""expertd/jsonc.py decodes and encodes as json does, and its errors are json's own."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from expertd import jsonc

CORPUS = Path(__file__).resolve().parents[2] / "corpus"

TEXTS = [
    '{"id": 1, "text": "I love it"}', ' {"a": [1, 2.5, -3e2, true, false, null]} \r\n', "[]",
    '"\\ud83d\\ude00 caf\\u00e9"', "12", "-0.0", "1e400", "NaN", "[-Infinity, Infinity]",
    '{"a": 1} {"b": 2}', "", "   ", "{", '{"a": }', "[1, 2", "plain text", '"\\ud800"',
    '{"a": "\x01"}', "[" * 5000 + "]" * 5000, '{"dup": 1, "dup": 2}', "\t\n42\n",
]


def corpus_lines() -> list[str]:
    """Every line of the stage's hostile-input corpus that is UTF-8."""
    lines = []
    for path in sorted((CORPUS / "pipe").glob("*.jsonl")) + [CORPUS / "forged_opinions.jsonl"]:
        for raw in path.read_bytes().splitlines():
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                pass
    return lines


def outcome(decode, text: str):
    """What ``decode(text)`` returns, or the exception's type, message and position."""
    try:
        value = decode(text)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc), getattr(exc, "pos", None)
    return "value", repr(value) if not isinstance(value, float) or not math.isnan(value) else "nan"


@pytest.mark.parametrize("text", TEXTS + corpus_lines())
def test_loads_is_json_loads(text):
    assert outcome(jsonc.loads, text) == outcome(json.loads, text)


def refuse(name):
    raise ValueError(f"{name} refused")


@pytest.mark.parametrize("text", ["[1.5, 2]", "[NaN]", "1e400", "{", '{"a": [Infinity]}'])
def test_decoder_hooks_are_json_decoders_hooks(text):
    ours = jsonc.Decoder(parse_float=lambda s: ("float", s), parse_constant=refuse)
    theirs = json.JSONDecoder(parse_float=lambda s: ("float", s), parse_constant=refuse)
    assert outcome(ours.decode, text) == outcome(theirs.decode, text)


VALUES = [{"id": 1, "text": "caf\u00e9 \U0001F600 \"q\" \\ \n"}, [1, 2.5, None, True, False],
          "plain", {"nested": {"a": [{}]}}, 10**30, -0.0, {1: "int key"}]


@pytest.mark.parametrize("value", VALUES)
def test_encoder_is_json_dumps(value):
    assert jsonc.dumps(value) == json.dumps(value, ensure_ascii=False, allow_nan=False)
    compact = jsonc.encoder((",", ":"))
    assert compact(value) == json.dumps(value, ensure_ascii=False, allow_nan=False,
                                        separators=(",", ":"))


@pytest.mark.parametrize("value", [float("nan"), [float("inf")], {"a": object()}, {(1, 2): 3}])
def test_encoder_errors_are_json_errors(value):
    def error(encode):
        try:
            encode(value)
        except (ValueError, TypeError) as exc:
            return type(exc), str(exc)
        return None

    assert error(jsonc.dumps) == error(lambda v: json.dumps(v, ensure_ascii=False,
                                                            allow_nan=False))


def test_a_circular_value_fails_and_leaves_the_encoder_usable():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        jsonc.dumps(loop)
    assert jsonc.dumps([loop[:0], 1]) == "[[], 1]"


def test_decoding_a_bad_document_in_a_fresh_interpreter_raises_jsons_own_error():
    """Without json imported, the C scanner cannot raise JSONDecodeError (a SystemError)."""
    code = ("import sys; from expertd import jsonc; assert 'json' not in sys.modules\n"
            "try:\n    jsonc.loads('{')\n"
            "except ValueError as exc:\n    print(type(exc).__name__, exc.pos)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["JSONDecodeError", "1"]
