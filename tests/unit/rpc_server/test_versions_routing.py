"""``rpc_server.versions`` and ``rpc_server.shadow`` in-process: which version a document gets
under a canary, and how two opinions are compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from expertd.experts.versions import ServedVersions
from expertd.rpc_server.errors import UnknownExpert
from expertd.rpc_server.shadow import compare
from expertd.rpc_server.versions import Canary, VersionSet


def version_set(labels=None) -> VersionSet:
    served = ServedVersions("model_dir", Path("models/x"), {"2": Path("2"), "3": Path("3")},
                            labels or {"stable": "2", "canary": "3"})
    return VersionSet("x", served, {"2": object(), "3": object()}, {"2": None, "3": None})


def test_unnamed_calls_get_stable_and_labels_name_versions():
    versions = version_set()
    assert versions.resolve(None) == "2" and versions.resolve("canary") == "3"
    with pytest.raises(UnknownExpert, match="serves no version '9'; served: 2 \\(stable\\), 3 \\(canary\\)"):
        versions.resolve("9")


def test_a_sticky_canary_gives_each_document_one_version_and_about_its_share():
    versions = version_set()
    versions.canary = Canary("3", 0.1, "document")
    texts = [f"text {i}" for i in range(2000)]
    first = [versions.choose(t) for t in texts]
    assert first == [versions.choose(t) for t in texts]
    assert 0.07 < first.count("3") / len(first) < 0.13


def test_no_canary_or_an_unserved_one_is_the_default():
    versions = version_set()
    assert versions.choose("x") == "2"
    versions.canary = Canary("7", 1.0)
    assert versions.choose("x") == "2"
    versions.canary = Canary("3", 1.0)
    assert versions.choose("x") == "3"


def test_compare_counts_equal_labels_and_adds_numeric_differences():
    fields: dict = {}
    compare({"label": "positive", "valence": 2.0, "ok": True}, {"label": "positive", "valence": 1.5,
                                                               "ok": False}, fields)
    compare({"label": "positive", "valence": 2.0}, {"label": "neutral", "valence": 2.25}, fields)
    compare({"label": "negative", "valence": float("nan")}, {}, fields)
    assert fields["label"] == {"compared": 3, "agreed": 1, "abs_diff": 0.0, "numeric": False}
    assert fields["valence"] == {"compared": 2, "agreed": 0, "abs_diff": 0.75, "numeric": True}
    assert fields["ok"]["compared"] == 1 and fields["ok"]["agreed"] == 0


def test_a_canary_sticky_per_caller_keys_on_a_document_field():
    versions = version_set()
    versions.canary = Canary("3", 0.5, "field:user")
    for user in (f"user{i}" for i in range(50)):
        got = {versions.choose(f"text {j}", {"user": user, "text": f"text {j}"}) for j in range(20)}
        assert len(got) == 1  # every document of one caller: one version
    users = [versions.choose("t", {"user": f"user{i}"}) for i in range(400)]
    assert 0.35 < users.count("3") / len(users) < 0.65
