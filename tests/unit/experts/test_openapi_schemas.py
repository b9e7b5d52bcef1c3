"""Experts declare the JSON Schema of their opinion (``opinion_schema``); what they answer matches it."""

from __future__ import annotations

import pytest

from expertd.experts.base import Expert, FunctionExpert
from expertd.experts.examples import FailingExpert, SlowExpert, shouting
from expertd.experts.vader import VaderExpert

jsonschema_rs = pytest.importorskip("jsonschema_rs")

TEXTS = ["I LOVE this!!!", "The plot was dull and the acting worse.", "", "meh", "😀 great 😀",
         "The council must act on the budget deficit before winter."]


def assert_matches(schema: dict, opinion: dict) -> None:
    """``opinion`` is valid under ``schema`` (JSON Schema 2020-12, as OpenAPI 3.1 uses)."""
    validator = jsonschema_rs.Draft202012Validator(schema)
    errors = [e.message for e in validator.iter_errors(opinion)]
    assert not errors, (opinion, errors)


def test_schema_is_reported_by_describe():
    """``describe()`` (what ``experts()`` returns) carries the schema, or None."""
    required = VaderExpert().describe()["opinion_schema"]["required"]
    assert required == ["compound", "pos", "neu", "neg", "label"]
    assert FailingExpert().describe()["opinion_schema"] is None
    assert Expert.opinion_schema is None


def test_plain_functions_may_declare_a_schema_or_not():
    """A function's ``opinion_schema`` attribute is used; without one it is None."""
    assert FunctionExpert(shouting).describe()["opinion_schema"]["required"] == ["ratio"]

    def plain(text):
        """No schema here."""
        return {"n": len(text)}

    assert FunctionExpert(plain).describe()["opinion_schema"] is None


@pytest.mark.parametrize("expert", [VaderExpert(), FunctionExpert(shouting), SlowExpert(seconds=0)],
                         ids=lambda e: e.name)
def test_answers_match_the_declared_schema(expert):
    """Every opinion of the schema-declaring experts that need no model is valid under it."""
    expert.load()
    for opinion in expert.predict(TEXTS):
        assert_matches(expert.opinion_schema, opinion)
