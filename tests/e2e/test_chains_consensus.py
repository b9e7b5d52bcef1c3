"""The default chained expert, ``consensus``, on the real default server (Keras and VADER)."""

from __future__ import annotations

import json

import pytest

from expertd.experts.consensus import ConsensusExpert
from tests.conftest import ROOT

POSITIVE = "I love this product, it is absolutely wonderful!"


def counts(client) -> dict[str, tuple[int, int]]:
    """(calls, items) per expert from ``stats()``."""
    return {name: (entry["calls"], entry["items"])
            for name, entry in client.stats()["experts"].items()}


def test_consensus_alone_returns_its_opinion_and_those_it_built_on_each_once(client):
    before = counts(client)
    out = client.opinions({"id": 3, "text": POSITIVE}, ["consensus"])
    after = counts(client)
    opinions = out["opinions"]
    assert list(opinions) == ["sentiment", "vader", "consensus"]
    for name in ("sentiment", "vader", "consensus"):
        assert after[name] == (before[name][0] + 1, before[name][1] + 1), name
    assert after["genre"] == before["genre"]
    verdict = opinions["consensus"]
    assert set(verdict) == {"valence", "label", "agree", "labels"}
    assert verdict["label"] == "positive" and verdict["agree"] is True
    assert verdict["labels"] == {"sentiment": opinions["sentiment"]["label"],
                                 "rules": opinions["vader"]["label"]}
    # The verdict is the expert's own combination of exactly those two opinions.
    assert verdict == ConsensusExpert().combine(opinions["sentiment"], opinions["vader"])
    assert client.consensus({"text": POSITIVE}) == verdict


def test_a_document_carrying_a_sentiment_opinion_is_not_re_asked(client):
    carried = {"valence": -3.5, "label": "negative", "confidence": 0.99}
    before = counts(client)
    out = client.opinions({"text": POSITIVE, "opinions": {"sentiment": carried}}, ["consensus"])
    after = counts(client)
    assert after["sentiment"] == before["sentiment"]
    assert after["vader"][1] == before["vader"][1] + 1
    assert out["opinions"]["sentiment"] == carried
    verdict = out["opinions"]["consensus"]
    assert verdict["agree"] is False and verdict["labels"]["sentiment"] == "negative"
    fresh = client.opinions({"text": POSITIVE, "opinions": {"sentiment": carried}},
                            ["consensus"], {"fresh": True})
    assert fresh["opinions"]["sentiment"]["label"] == "positive"
    assert counts(client)["sentiment"][1] == after["sentiment"][1] + 1


def test_a_carried_opinion_that_is_not_a_sentiment_opinion_is_recomputed_not_reused(client):
    out = client.opinions({"text": POSITIVE, "opinions": {"sentiment": {"score": 1}}},
                          ["consensus", "genre"])
    assert "errors" not in out
    assert '"valence" is a required property' in out["recomputed"]["sentiment"]
    assert out["opinions"]["sentiment"]["label"] == "positive"
    assert out["opinions"]["consensus"] == ConsensusExpert().combine(
        out["opinions"]["sentiment"], out["opinions"]["vader"])
    assert "genre" in out["opinions"]


def test_experts_reports_needs_and_held_out_metrics(client):
    entries = {entry["name"]: entry for entry in client.experts()}
    consensus = entries["consensus"]
    assert consensus["needs"] == {"sentiment": "sentiment", "vader": "rules"}
    assert entries["sentiment"]["needs"] == {}
    path = ROOT / "models" / "consensus" / "metrics.json"
    if not path.exists():
        pytest.skip("no models/consensus/metrics.json (make models writes it)")
    metrics = consensus["metrics"]
    assert metrics == json.loads(path.read_text())
    for judge in ("consensus", "sentiment", "vader"):
        assert -1 <= metrics[judge]["heldout_pearson_r"] <= 1
        assert 0 <= metrics[judge]["label_accuracy"] <= 1
    assert 0 < metrics["agreement_rate"] < 1


def test_consensus_answers_match_its_declared_schema(client):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = {e["name"]: e for e in client.experts()}["consensus"]["opinion_schema"]
    validator = jsonschema_rs.Draft202012Validator(schema)
    for text in (POSITIVE, "The plot was dull and the acting worse.", "", "meh", "Not bad at all"):
        opinion = client.consensus({"text": text})
        assert not [e.message for e in validator.iter_errors(opinion)], opinion
