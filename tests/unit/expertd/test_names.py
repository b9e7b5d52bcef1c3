"""expertd/names.py answers every case of tests/corpus/expert_names.json (the bridge's
src/names.js is held to the same file by express_bridge/test/names.test.js)."""

import json

import pytest

from expertd.names import ExpertRef, parse_ref
from tests.conftest import ROOT

CASES = json.loads((ROOT / "tests" / "corpus" / "expert_names.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c["text"])[:40])
def test_corpus_case(case):
    if "parsed" in case:
        assert parse_ref(case["text"])._asdict() == case["parsed"]
    else:
        with pytest.raises(ValueError) as info:
            parse_ref(case["text"])
        assert str(info.value) == case["error"]
        assert "\n" not in str(info.value)


def test_a_ref_prints_as_written():
    assert str(ExpertRef("sentiment", "3")) == "sentiment@3"
    assert str(ExpertRef("sentiment")) == "sentiment"


NAME_LIKE = ["a", "Z9", "sentiment", "a_b_", "_a", "9a", "a-b", "a b", "", "é", "aé", "a\n",
             "ａ", "class", "a" * 300, "A1_z", "a\u0660", "ß", "a.b", "a@b"]


@pytest.mark.parametrize("text", NAME_LIKE + [case["text"] for case in CASES
                                              if isinstance(case["text"], str)])
def test_the_check_without_re_agrees_with_the_grammar(text):
    """expertd.names checks NAME without ``re`` (pipe start-up) while protocol.json's pattern
    is the one it implements; both give the same answer."""
    import re

    from expertd import names

    assert names._PLAIN_NAME_PATTERN == names._NAMES["name"]
    expected = re.fullmatch(names._NAMES["name"], text) is not None
    assert names._plain_name(text) is expected
    assert names._is_name(text) is expected


def test_another_grammar_turns_the_check_without_re_off(monkeypatch):
    from expertd import names

    monkeypatch.setitem(names._NAMES, "name", "^[a-z]+$")
    assert names._plain_name("Sentiment") and not names._is_name("Sentiment")
    assert names._is_name("sentiment")
