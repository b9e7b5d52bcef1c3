"""The output check's fast path never passes what the full check refuses, and takes the common case."""

from __future__ import annotations

import math
import random

import pytest

from expertd.experts.consensus import ConsensusExpert
from expertd.experts.keras_text import GenreExpert, SentimentExpert
from expertd.experts.vader import VaderExpert
from expertd.rpc_server import outputs
from expertd.rpc_server.opinion_fast_check import fast_check

SCHEMAS = {cls.__name__: cls.opinion_schema for cls in
           (SentimentExpert, GenreExpert, VaderExpert, ConsensusExpert)}
SCHEMAS["integers"] = {"type": "object", "required": ["n"], "additionalProperties": False,
                       "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10},
                                      "flag": {"type": "boolean"}, "note": {"type": "string"}}}
SCHEMAS["open"] = {"type": "object", "properties": {"x": {"type": "number"}}}

ODD_VALUES = [math.nan, math.inf, -math.inf, 1e308, -1e308, 2 ** 64, -(2 ** 63) - 1, True, False,
              None, "", "positive", "tweet", 1.0, 0, 1, -1, 0.5, 4.0000001, [], {}, [1.0], b"x"]


def full_check_passes(schema: dict, opinion) -> bool:
    """What the check decided before the fast path: the protocol, then jsonschema-rs."""
    if type(opinion) is not dict or outputs._value_problem(opinion, 0) is not None:
        return False
    return outputs.schema_validator(schema).is_valid(opinion)


def variants(opinion: dict, rng: random.Random):
    """``opinion`` with one value changed, one key dropped or added, or a nested value changed."""
    yield opinion
    for key in opinion:
        for odd in ODD_VALUES:
            yield {**opinion, key: odd}
        yield {k: v for k, v in opinion.items() if k != key}
        if isinstance(opinion[key], dict):
            for inner in variants(opinion[key], rng):
                yield {**opinion, key: inner}
    yield {**opinion, "extra": 1}
    yield {**opinion, 7: 1}
    yield [opinion]


def example(name: str, rng: random.Random) -> dict:
    """A valid opinion for schema ``name``."""
    if name == "SentimentExpert":
        return {"valence": round(rng.uniform(-4, 4), 4), "label": "neutral",
                "confidence": round(rng.random(), 4)}
    if name == "GenreExpert":
        probabilities = {label: 0.25 for label in
                         SCHEMAS[name]["properties"]["probabilities"]["required"]}
        return {"label": next(iter(probabilities)), "probabilities": probabilities}
    if name == "integers":
        return {"n": rng.randrange(11), "flag": True, "note": "hi"}
    if name == "open":
        return {"x": 1.5}
    schema = SCHEMAS[name]

    def value(sub):
        if sub.get("type") == "object":
            return {k: value(v) for k, v in sub.get("properties", {}).items()}
        if "enum" in sub:
            return sub["enum"][0]
        if sub.get("type") == "string":
            return "text"
        if sub.get("type") == "boolean":
            return False
        low, high = sub.get("minimum", -1), sub.get("maximum", 1)
        return (low + high) / 2

    return {k: value(v) for k, v in schema["properties"].items()}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_fast_path_passes_only_what_the_full_check_passes(name):
    schema = SCHEMAS[name]
    surely_valid = fast_check(schema)
    assert surely_valid is not None  # every built-in expert's schema has a fast path
    rng = random.Random(name)
    valid = example(name, rng)
    assert full_check_passes(schema, valid) and surely_valid(valid)  # the common case is fast
    checked = 0
    for opinion in variants(valid, rng):
        if surely_valid(opinion):
            assert full_check_passes(schema, opinion), opinion
        checked += 1
    assert checked > 20


def test_the_checker_words_a_problem_as_before():
    check = outputs.opinion_checker(SentimentExpert.opinion_schema)
    assert check({"valence": 9.0, "label": "neutral", "confidence": 0.5}).startswith(
        "an opinion that breaks its opinion_schema: valence: 9.0 is greater than the maximum of 4")
    assert check({"valence": math.nan, "label": "neutral", "confidence": 0.5}) == \
        "an opinion holding a non-finite number (nan)"
    assert check({"valence": 1.0, "label": "neutral", "confidence": 0.5}) is None


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 0}}},
    {"type": "object", "properties": {"x": {"type": ["number", "null"]}}},
    {"type": "object", "properties": {"x": {"enum": [1, 2]}}},
    {"type": "object", "patternProperties": {"^x": {"type": "number"}}},
    {"type": "array"},
    {"$ref": "#/definitions/x"},
])
def test_a_schema_beyond_the_simple_kinds_gets_no_fast_path(schema):
    assert fast_check(schema) is None


def test_a_closed_record_is_one_generated_check_that_decides_as_the_full_one():
    surely_valid = fast_check(SentimentExpert.opinion_schema)
    assert surely_valid.__name__ == "closed_record_ok"
    good = {"valence": 1.5, "label": "positive", "confidence": 0.9}
    assert surely_valid(good) and surely_valid({**good, "valence": -4, "confidence": 1})
    for bad in ({**good, "extra": 1}, {"valence": 1.5, "label": "positive"},
                {"valence": 1.5, "label": "positive", "other": 0.5}, {**good, "valence": math.nan},
                {**good, "valence": 4.5}, {**good, "valence": True}, {**good, "label": "meh"},
                {**good, "confidence": math.inf}, {**good, "valence": 2 ** 64}, [good], None):
        assert not surely_valid(bad), bad
