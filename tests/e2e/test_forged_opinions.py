"""Opinions a document carries are checked before a chain reuses them (issue 23, point 2).

The default server (config/experts.yaml: ``consensus`` needs ``sentiment`` and
``vader``) is asked about each document of tests/corpus/forged_opinions.jsonl,
through the stock ``zerorpc.Client`` and through the pipe stage. Each corpus
line holds the document (its carried ``opinions``) and, per expert, a part of
the reason the server must give under ``recomputed.<name>`` (``{}``: nothing is
recomputed, what the document carries is valid and reused). The HTTP bridge
(which found it: 200 with a consensus valence of 5e+307) is asked too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema_rs
import pytest

from tests.conftest import BIN
from tests.e2e.test_chains_bridge import post, running_bridge

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "forged_opinions.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
NEEDED = ("sentiment", "vader")


@pytest.fixture(scope="module")
def validators(server):
    """Each default expert's ``opinion_schema`` as ``experts()`` reports it, compiled."""
    import zerorpc

    client = zerorpc.Client(server.endpoint, timeout=30)
    try:
        return {entry["name"]: jsonschema_rs.validator_for(entry["opinion_schema"])
                for entry in client.experts() if entry["opinion_schema"]}
    finally:
        client.close()


def check_answer(case: dict, answer: dict, validators: dict, *, include_needs: bool = True,
                 exact_numbers: bool = True) -> None:
    """``answer`` (a document or an only-opinions answer) is right for the corpus ``case``.

    ``exact_numbers=False`` for answers through JavaScript, whose numbers are all doubles
    (9223372036854775807 arrives as 9.223372036854776e+18): the reason is checked from its verb.
    """
    what = case["what"]
    carried = case["doc"]["opinions"]
    expected = case["recomputed"]
    opinions = answer["opinions"]
    assert "errors" not in answer, (what, answer)
    consensus = opinions["consensus"]
    assert validators["consensus"].is_valid(consensus), (what, consensus)
    assert -4 <= consensus["valence"] <= 4, (what, consensus)
    assert answer.get("recomputed", {}).keys() == expected.keys(), (what, answer)
    for name, reason in expected.items():
        reason = reason if exact_numbers else reason.rpartition(" is ")[2]
        assert reason in answer["recomputed"][name], (what, answer["recomputed"][name])
        # The recomputed opinion replaced the carried one, even when needs are left out.
        assert validators[name].is_valid(opinions[name]), (what, opinions[name])
        assert opinions[name] != carried[name], what
    for name in NEEDED:
        if name in carried and name not in expected:  # valid: reused as it was
            assert opinions[name] == carried[name], what
        elif name not in carried and name not in expected:
            assert (name in opinions) == include_needs, (what, opinions)
    fresh = {name: opinions[name] for name in NEEDED if name in opinions}
    if len(fresh) == 2:
        from expertd.experts.consensus import ConsensusExpert

        assert consensus == ConsensusExpert().combine(fresh["sentiment"], fresh["vader"]), what


@pytest.mark.parametrize("case", CASES, ids=[case["what"] for case in CASES])
def test_a_forged_opinion_is_recomputed_and_named_by_the_stock_client(client, validators, case):
    answer = client.opinions(case["doc"], ["consensus"])
    assert answer["text"] == case["doc"]["text"]
    check_answer(case, answer, validators)
    # The chained expert's own method recomputes too (it answers only its opinion).
    assert -4 <= client.consensus(case["doc"])["valence"] <= 4
    assert -4 <= client.opinion("consensus", case["doc"])["valence"] <= 4


def test_forged_opinions_in_one_opinions_batch_with_every_option(client, validators):
    docs = [case["doc"] for case in CASES]
    for options, include_needs in ((None, True), ({"only_opinions": True}, True),
                                   ({"include_needs": False}, False),
                                   ({"only_opinions": True, "include_needs": False}, False)):
        answers = client.opinions_batch(docs, ["consensus"], options)
        assert len(answers) == len(CASES)
        for case, answer in zip(CASES, answers):
            check_answer(case, answer, validators, include_needs=include_needs)
    for verdict in client.batch("consensus", docs):
        assert -4 <= verdict["valence"] <= 4


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_number_msgpack_carries_is_refused(client, validators, value):
    carried = {"valence": value, "label": "positive", "confidence": 0.9}
    doc = {"text": CASES[0]["doc"]["text"], "opinions": {"sentiment": carried}}
    answer = client.opinions(doc, ["consensus"])
    assert "non-finite number" in answer["recomputed"]["sentiment"]
    assert validators["sentiment"].is_valid(answer["opinions"]["sentiment"])
    assert -4 <= answer["opinions"]["consensus"]["valence"] <= 4


def test_forged_opinions_through_the_pipe_stage(env, validators):
    stdin = b"".join(json.dumps(case["doc"]).encode() + b"\n" for case in CASES)
    out = subprocess.run([str(BIN / "expertd"), "pipe", "consensus"], input=stdin,
                         capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    assert len(lines) == len(CASES)
    for case, line in zip(CASES, lines):
        answer = json.loads(line)
        assert answer["text"] == case["doc"]["text"]
        check_answer(case, answer, validators)


def test_forged_opinions_through_the_http_bridge(server, validators):
    with running_bridge(server.endpoint) as url:
        for case in CASES:
            status, verdict = post(f"{url}/experts/consensus", case["doc"])
            assert status == 200 and validators["consensus"].is_valid(verdict), (case["what"], verdict)
            status, answer = post(f"{url}/opinions", {"doc": case["doc"], "experts": ["consensus"]})
            assert status == 200, answer
            check_answer(case, answer, validators, exact_numbers=False)
