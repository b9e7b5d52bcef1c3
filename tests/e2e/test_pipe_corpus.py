"""The corpus of hostile JSON Lines (tests/corpus/pipe/) against a real server: nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN

EXPERTD = str(BIN / "expertd")
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "pipe"
#: What must come out for a case's line: "through" (unchanged, with a warning), "answered"
#: (valid JSON with the expert's opinion or error), or "either" (up to the server).
EXPECT = {"answered_oddities": "answered", "deep_nesting_moderate": "either"}


def cases():
    """``(file stem, case number, raw line)`` for every line of the corpus."""
    for path in sorted(CORPUS.glob("*.jsonl")):
        for n, line in enumerate(path.read_bytes().split(b"\n")[:-1]):
            yield pytest.param(path.stem, line + b"\n", id=f"{path.stem}-{n}")


def _refuse(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(line: bytes):
    """The line parsed as JSON that every parser accepts (no NaN, no Infinity)."""
    return json.loads(line.decode("utf-8"), parse_constant=_refuse)


@pytest.fixture
def odd_env(odd_server):
    """Environment for stages that talk to the no-TensorFlow server."""
    return dict(os.environ, EXPERTD_ENDPOINT=odd_server.endpoint,
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def good(i: int) -> bytes:
    """A document every expert answers."""
    return json.dumps({"i": i, "text": f"a fine day number {i}"}).encode() + b"\n"


@pytest.mark.parametrize("kind,case", list(cases()))
def test_hostile_line_501_of_1000(odd_env, kind, case):
    lines = [good(i) for i in range(1000)]
    lines[500] = case
    out = subprocess.run([EXPERTD, "pipe", "--lines", "vader"], input=b"".join(lines),
                         capture_output=True, env=odd_env, timeout=120)
    got = out.stdout.split(b"\n")
    assert got[-1] == b"" and len(got) == 1001, out.stderr
    for i, line in enumerate(got[:-1]):
        if i == 500:
            continue
        doc = strict_json(line)
        assert doc["i"] == i and "vader" in doc["opinions"], line
    mine = got[500] + b"\n"
    expect = EXPECT.get(kind, "through")
    if expect == "either":
        expect = "through" if mine == case else "answered"
    if expect == "answered":
        doc = strict_json(mine)
        assert "vader" in doc["opinions"] or "vader" in doc["errors"]
    else:
        assert mine == case
        assert b"line 501: " in out.stderr and b"written through unchanged" in out.stderr
        assert out.returncode == 1
    assert b"Traceback" not in out.stderr


def test_whole_corpus_in_one_chunk(odd_env):
    """Every case side by side with good documents: each neighbour is still answered."""
    lines, hostile = [], {}
    for param in cases():
        kind, case = param.values
        lines.append(good(len(lines)))
        hostile[len(lines)] = (kind, case)
        lines.append(case)
    lines.append(good(len(lines)))
    out = subprocess.run([EXPERTD, "pipe", "vader"], input=b"".join(lines),
                         capture_output=True, env=odd_env, timeout=120)
    got = out.stdout.split(b"\n")[:-1]
    assert len(got) == len(lines), out.stderr
    for i, line in enumerate(got):
        if i in hostile:
            kind, case = hostile[i]
            if line + b"\n" != case:
                assert EXPECT.get(kind, "through") != "through", line
                strict_json(line)
        else:
            assert strict_json(line)["opinions"]["vader"]
    assert out.returncode == 1


@pytest.mark.parametrize("doc", [b'{"text": "x", "n": 1e400}', b'{"text": "\\ud83d"}',
                                 b'{\n  "text": "pretty",\n  "n": 123456789012345678901234567890\n}\n'])
def test_hostile_single_document_is_written_through(odd_env, doc):
    out = subprocess.run([EXPERTD, "pipe", "vader"], input=doc, capture_output=True,
                         env=odd_env, timeout=60)
    assert out.returncode == 1
    assert out.stdout.rstrip(b"\n") == doc.rstrip(b"\n")
    assert b"line 1: " in out.stderr and b"Traceback" not in out.stderr
