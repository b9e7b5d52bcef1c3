"""The learner's ``opinion_schema`` holds its own opinions (before and after learning), and
refuses forged ones, so that a chain checks a carried learner opinion like any other."""

from __future__ import annotations

import pytest

from expertd.experts.online import MAX_LABEL_CHARS, OnlineTextExpert
from expertd.experts.schemas import compile_schema
from expertd.rpc_server.learning import MAX_TARGET_CHARS
from expertd.rpc_server.outputs import opinion_checker

pytest.importorskip("river")


@pytest.fixture(scope="module")
def learner():
    expert = OnlineTextExpert("learner")
    expert.load()
    return expert


def test_a_label_is_as_long_as_learn_accepts():
    assert MAX_LABEL_CHARS == MAX_TARGET_CHARS


def test_its_own_opinions_pass_before_and_after_learning(learner):
    validator = compile_schema(OnlineTextExpert.opinion_schema)
    before = learner.predict(["anything"])[0]
    assert validator.is_valid(before), before
    learner.learn(["good film", "dull book", "a fine film"], ["film", "book", "film"])
    after = learner.predict(["a film", "unknown words"])
    assert all(validator.is_valid(opinion) for opinion in after), after


@pytest.mark.parametrize("forged", [
    {"label": "film", "probabilities": {"film": 1e308}, "known_labels": ["film"], "updates": 1},
    {"label": "film", "probabilities": {"film": -0.5}, "known_labels": ["film"], "updates": 1},
    {"label": "film", "known_labels": ["film"], "updates": 1},  # no probabilities
    {"label": None, "known_labels": ["film"], "updates": 0},  # no label yet knows a label
    {"label": None, "known_labels": [], "updates": 9223372036854775807},
    {"label": "", "probabilities": {"": 1.0}, "known_labels": [""], "updates": 1},
    {"label": "x" * (MAX_LABEL_CHARS + 1), "probabilities": {"x": 1.0}, "known_labels": ["x"],
     "updates": 1},
    {"label": 5, "probabilities": {"5": 1.0}, "known_labels": ["5"], "updates": 1},
    {"label": "film", "probabilities": {"film": 1.0}, "known_labels": ["film", "film"],
     "updates": 2},
    {"label": "film", "probabilities": {"film": 1.0}, "known_labels": ["film"], "updates": -1},
    {"label": "film", "probabilities": {"film": 1.0}, "known_labels": ["film"], "updates": 1,
     "weight": 1e308},
])
def test_forged_opinions_fail_the_check(forged):
    assert opinion_checker(OnlineTextExpert.opinion_schema)(forged) is not None, forged
