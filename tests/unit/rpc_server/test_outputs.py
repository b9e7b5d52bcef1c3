"""The check every opinion passes before it is served or reused: ``rpc_server.outputs``."""

from __future__ import annotations

import pytest

from expertd.experts.consensus import ConsensusExpert
from expertd.experts.examples import shouting
from expertd.experts.keras_text import GENRE_LABELS, GenreExpert, SentimentExpert
from expertd.experts.vader import VaderExpert
from expertd.rpc_server.outputs import opinion_checker, opinion_problem, schema_validator

SENTIMENT = {"valence": 1.5, "label": "positive", "confidence": 0.9}
VADER = {"compound": 0.5, "pos": 0.4, "neu": 0.6, "neg": 0.0, "label": "positive"}
GENRE = {"label": "tweet", "probabilities": {label: 0.25 for label in GENRE_LABELS}}
CONSENSUS = {"valence": 1.0, "label": "positive", "agree": True,
             "labels": {"sentiment": "positive", "rules": "positive"}}


@pytest.mark.parametrize("schema, opinion", [
    (SentimentExpert.opinion_schema, SENTIMENT),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=-4)),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=4.0)),
    (VaderExpert.opinion_schema, VADER),
    (GenreExpert.opinion_schema, GENRE),
    (ConsensusExpert.opinion_schema, CONSENSUS),
    (shouting.opinion_schema, {"ratio": 1}),
])
def test_an_opinion_that_fits_its_schema_passes(schema, opinion):
    assert opinion_checker(schema)(opinion) is None


@pytest.mark.parametrize("schema, opinion, problem", [
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=1e308),
     "breaks its opinion_schema: valence: 1e+308 is greater than the maximum of 4"),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=-1e308),
     "valence: -1e+308 is less than the minimum of -4"),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=9223372036854775807),
     "valence: 9223372036854775807 is greater than the maximum of 4"),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=7.88), "greater than the maximum of 4"),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, valence=True), 'valence: true is not of type "number"'),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, confidence=1.5), "confidence: 1.5 is greater"),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, label="great"), 'label: "great" is not one of'),
    (SentimentExpert.opinion_schema, {"label": "positive", "confidence": 1},
     '"valence" is a required property'),
    (SentimentExpert.opinion_schema, dict(SENTIMENT, extra=1), "Additional properties are not allowed"),
    (VaderExpert.opinion_schema, dict(VADER, compound=-1.01),
     "compound: -1.01 is less than the minimum of -1"),
    (GenreExpert.opinion_schema, dict(GENRE, probabilities=dict(GENRE["probabilities"], tweet=2)),
     "probabilities/tweet: 2 is greater than the maximum of 1"),
    (ConsensusExpert.opinion_schema, dict(CONSENSUS, valence=5e307), "valence: 5e+307 is greater"),
])
def test_an_opinion_that_breaks_its_schema_names_where_and_how(schema, opinion, problem):
    found = opinion_checker(schema)(opinion)
    assert found is not None and problem in found, found


@pytest.mark.parametrize("value, problem", [
    (float("nan"), "a non-finite number (nan)"), (float("inf"), "a non-finite number (inf)"),
    (float("-inf"), "a non-finite number (-inf)"), (2 ** 70, "an integer beyond 64 bits"),
])
def test_what_the_protocol_cannot_carry_is_refused_before_the_schema(value, problem):
    # The schema validator would read NaN as null; the protocol check comes first.
    for schema in (SentimentExpert.opinion_schema, None):
        assert opinion_checker(schema)(dict(SENTIMENT, valence=value)) == \
            f"an opinion holding {problem}"
    nested = dict(GENRE, probabilities=dict(GENRE["probabilities"], tweet=value))
    assert problem in opinion_checker(GenreExpert.opinion_schema)(nested)


@pytest.mark.parametrize("value, named", [(1e308, "number"), ("forged", "string"), ([1], "array"),
                                          (None, "null"), (True, "boolean")])
def test_something_that_is_not_an_object_is_named(value, named):
    assert opinion_problem(value, SentimentExpert.opinion_schema) == f"{named}, not a JSON object"


def test_without_a_schema_any_carriable_object_passes():
    assert opinion_checker(None)({"anything": [1, {"x": (2, 3)}], "score": 1e308}) is None


def test_a_schema_that_is_not_json_schema_is_refused_when_compiled():
    with pytest.raises(ValueError, match="opinion_schema is not a valid JSON Schema"):
        schema_validator({"type": "objekt"})
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        opinion_checker({"properties": {"x": {"minimum": "zero"}}})
