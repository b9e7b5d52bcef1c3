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
