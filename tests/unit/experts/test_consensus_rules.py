"""The consensus expert's combination rules, in-process (no model, no server)."""

from __future__ import annotations

from expertd.experts.consensus import ConsensusExpert, band


def test_combination_rules():
    expert = ConsensusExpert()
    agree = expert.combine({"valence": 2.0, "label": "positive"}, {"compound": 0.8, "label": "positive"})
    assert agree["agree"] is True and agree["label"] == "positive"
    split = expert.combine({"valence": 2.0, "label": "positive"}, {"compound": -0.9, "label": "negative"})
    assert split["agree"] is False and split["labels"] == {"sentiment": "positive", "rules": "negative"}
    assert split["label"] == band(split["valence"])
    assert ConsensusExpert(weight=1).combine({"valence": 2.0, "label": "positive"},
                                             {"compound": -1, "label": "negative"})["valence"] == 2.0
