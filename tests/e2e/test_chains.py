"""Chains (experts that build on other experts' opinions) against a real server, no TensorFlow.

The experts are in tests/chain_experts.py and tests/chain_experts.yaml: each
``Tally`` answers how often it has computed a text, so ``seen == 1`` on a
fresh text proves it was computed once.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import zerorpc

from tests.conftest import BIN, EXPERTD, ROOT, ServerProcess, free_port

CHAIN_CONFIG = Path(__file__).resolve().parents[1] / "chain_experts.yaml"


@pytest.fixture(scope="module")
def chain_server(tmp_path_factory):
    """A real ``expertd serve`` of the chain test experts."""
    proc = ServerProcess(CHAIN_CONFIG, tmp_path_factory.mktemp("chains"))
    yield proc
    assert proc.stop() == 0, proc.read_log()


@pytest.fixture
def chain(chain_server):
    """The stock ``zerorpc.Client`` connected to the chain server."""
    c = zerorpc.Client(chain_server.endpoint, timeout=30)
    yield c
    c.close()


def fresh_text() -> str:
    """A text no test has sent before (so every Tally's count starts at zero)."""
    return f"text {uuid.uuid4().hex}"


def calls(client, name: str) -> tuple[int, int]:
    """(calls, items) that ``stats()`` counts for expert ``name``."""
    entry = client.stats()["experts"][name]
    return entry["calls"], entry["items"]


def remote_error(call, *args) -> zerorpc.RemoteError:
    """Call and return the RemoteError it raises (fails the test if none)."""
    with pytest.raises(zerorpc.RemoteError) as info:
        call(*args)
    return info.value


# -- once, in order, with the mapping ------------------------------------------------

def test_asking_one_chained_expert_runs_what_it_needs_once(chain):
    before = {name: calls(chain, name) for name in ("base", "other", "pair", "twice")}
    out = chain.opinions({"id": 1, "text": fresh_text()}, ["twice"])
    opinions = out["opinions"]
    # twice needs pair and base; pair needs base and other: base is needed twice.
    assert list(opinions) == ["base", "other", "pair", "twice"]
    assert all(opinions[name]["seen"] == 1 for name in opinions)
    assert opinions["twice"]["got"] == {"pair": opinions["pair"], "base": opinions["base"]}
    assert opinions["pair"]["got"] == {"left": opinions["base"], "right": opinions["other"]}
    for name, (n_calls, items) in before.items():
        assert calls(chain, name) == (n_calls + 1, items + 1), name
    assert "errors" not in out and out["id"] == 1


def test_opinions_batch_runs_each_needed_expert_once_per_document(chain):
    texts = [fresh_text() for _ in range(5)]
    before = calls(chain, "base")
    out = chain.opinions_batch([{"text": t} for t in texts], ["twice", "pair"])
    assert [doc["text"] for doc in out] == texts
    for doc in out:
        assert all(opinion["seen"] == 1 for opinion in doc["opinions"].values())
    assert calls(chain, "base") == (before[0] + 1, before[1] + 5)  # one batch of 5


def test_batch_and_the_expert_method_and_opinion_run_the_chain(chain):
    text = fresh_text()
    first = chain.pair({"text": text})
    assert first["seen"] == 1 and set(first["got"]) == {"left", "right"}
    second = chain.opinion("pair", {"text": text})
    assert second["seen"] == 2 and second["got"]["left"]["seen"] == 2
    many = chain.batch("pair", [{"text": text}, {"text": fresh_text()}])
    assert [o["seen"] for o in many] == [3, 1]


def test_a_plain_function_can_build_on_opinions(chain):
    assert chain.keys({"text": "what a lovely day"}) == {"keys": ["text", "vader"]}


def test_independent_experts_run_concurrently(chain):
    # meet_a and meet_b each wait for the other in a barrier: both meet only if
    # the server runs them at the same time (else each gives up after 10 s).
    opinions = chain.opinions({"text": fresh_text()}, ["both"])["opinions"]
    assert opinions["meet_a"] == {"met": True} and opinions["meet_b"] == {"met": True}


# -- reuse, fresh, and what the answer shows ------------------------------------------

def test_an_opinion_the_document_carries_is_reused_not_recomputed(chain):
    carried = {"seen": 99, "chars": -1}
    before = calls(chain, "base")
    out = chain.opinions({"text": fresh_text(), "opinions": {"base": carried}}, ["pair"])
    assert out["opinions"]["base"] == carried
    assert out["opinions"]["pair"]["got"]["left"] == carried
    assert out["opinions"]["other"]["seen"] == 1
    assert calls(chain, "base") == before  # not asked at all


def test_fresh_recomputes_what_the_document_carries(chain):
    carried = {"seen": 99, "chars": -1}
    doc = {"text": fresh_text(), "opinions": {"base": carried, "other": carried}}
    everything = chain.opinions(doc, ["pair"], {"fresh": True})["opinions"]
    assert everything["base"]["seen"] == 1 and everything["other"]["seen"] == 1
    only_base = chain.opinions(doc, ["pair"], {"fresh": ["base"]})["opinions"]
    assert only_base["base"]["seen"] == 2 and only_base["other"] == carried


def test_an_expert_asked_for_is_computed_even_if_the_document_carries_it(chain):
    out = chain.opinions({"text": fresh_text(), "opinions": {"base": {"seen": 99}}}, ["base"])
    assert out["opinions"]["base"]["seen"] == 1


def test_the_caller_chooses_whether_needed_opinions_appear(chain):
    doc = {"text": fresh_text(), "opinions": {"earlier": {"x": 1}}}
    out = chain.opinions(doc, ["pair"], {"include_needs": False})
    assert list(out["opinions"]) == ["earlier", "pair"]
    batch = chain.opinions_batch([doc], ["pair"], {"include_needs": False})
    assert list(batch[0]["opinions"]) == ["earlier", "pair"]


def test_only_opinions_answers_opinions_and_errors_without_the_document(chain):
    doc = {"text": fresh_text(), "id": 7, "opinions": {"earlier": {"x": 1}}}
    bad = {"id": 8}  # no text: its error comes back, the document does not
    full, failed = chain.opinions_batch([doc, bad], ["pair"])
    slim, slim_failed = chain.opinions_batch([dict(doc, text=fresh_text()), bad], ["pair"],
                                             {"only_opinions": True})
    assert set(full) == {"text", "id", "opinions"} and set(slim) == {"opinions"}
    assert list(slim["opinions"]) == list(full["opinions"]) == ["earlier", "base", "other", "pair"]
    assert set(failed) == {"id", "opinions", "errors"}
    assert set(slim_failed) == {"opinions", "errors"}
    assert slim_failed["errors"].keys() == failed["errors"].keys()
    not_an_object = chain.opinions_batch(["just text"], ["pair"], {"only_opinions": True})[0]
    assert not_an_object["opinions"] == {}
    assert not_an_object["errors"]["pair"]["name"] == "InvalidDocument"
    one = chain.opinions(doc, ["pair"], {"only_opinions": True, "include_needs": False})
    assert list(one) == ["opinions"] and list(one["opinions"]) == ["earlier", "pair"]


def test_as_json_answers_the_json_text_of_the_same_answer(chain):
    docs = [{"text": "I love it, caf\u00e9 \U0001f600", "id": 1}, {"id": 2}, "just text",
            {"text": "fine", "opinions": {"earlier": {"x": 1.5e-300}}},
            {"text": "v", "versions": {"x": "1"}}, {"text": "e", "errors": {"x": "old"}}]
    for names in (["vader"], ["keys", "vader"], ["keys"], ["lonely", "vader"]):  # no Tally: counts change
        for options in ({"only_opinions": True}, {}, {"only_opinions": True, "include_needs": False}):
            plain = chain.opinions_batch(docs, names, options)
            texts = chain.opinions_batch(docs, names, dict(options, as_json=True))
            assert texts == [json.dumps(p, ensure_ascii=False).encode() for p in plain], (names,
                                                                                        options)
    one = chain.opinions(docs[0], ["vader"], {"as_json": True})
    assert json.loads(one) == chain.opinions(docs[0], ["vader"])


def test_bad_options_are_bad_arguments(chain):
    for options in (["fresh"], {"fresh": "yes"}, {"include_needs": 1}, {"only_opinions": "yes"},
                    {"as_json": 1},
                    {"refresh": True}):
        err = remote_error(chain.opinions, {"text": "x"}, ["pair"], options)
        assert err.name == "BadArguments", options
    assert "options are: fresh, include_needs, only_opinions" in remote_error(
        chain.opinions, {"text": "x"}, ["pair"], {"refresh": True}).msg


# -- failures ----------------------------------------------------------------------------

def test_a_failing_dependency_fails_only_its_dependents(chain):
    out = chain.opinions({"text": fresh_text()}, ["lonely", "pair", "vader"])
    errors = out["errors"]
    assert set(errors) == {"failing", "lonely"}
    assert errors["failing"]["name"] == "ExpertFailed"
    assert errors["lonely"]["name"] == "DependencyFailed"
    assert "'failing'" in errors["lonely"]["message"]
    assert "ExpertFailed" in errors["lonely"]["message"]
    assert "always fails" in errors["lonely"]["message"]
    assert set(out["opinions"]) == {"base", "other", "pair", "vader"}


def test_a_failing_dependency_is_dependency_failed_in_the_single_paths(chain):
    for call, args in ((chain.lonely, ({"text": "x"},)), (chain.opinion, ("lonely", {"text": "x"}))):
        err = remote_error(call, *args)
        assert err.name == "DependencyFailed" and "'failing'" in err.msg
    err = remote_error(chain.batch, "lonely", [{"text": "x"}, {"text": "y"}])
    assert err.name == "DependencyFailed" and err.msg.startswith("docs[0]: ")


def test_dependency_failure_is_per_document(chain):
    # title_len reads "title": a document without one fails it, and so on_title
    # (which reads "text") fails for that document only.
    docs = [{"text": fresh_text(), "title": "abc"}, {"text": fresh_text()},
            {"text": fresh_text(), "title": "hello"}]
    out = chain.opinions_batch(docs, ["on_title", "base"])
    assert out[0]["opinions"]["on_title"]["got"]["title_len"]["chars"] == 3
    assert out[2]["opinions"]["on_title"]["got"]["title_len"]["chars"] == 5
    assert "errors" not in out[0] and "errors" not in out[2]
    assert out[1]["errors"]["title_len"]["name"] == "InvalidDocument"
    assert out[1]["errors"]["on_title"]["name"] == "DependencyFailed"
    assert "'title_len'" in out[1]["errors"]["on_title"]["message"]
    assert set(out[1]["errors"]) == {"title_len", "on_title"}
    assert out[1]["opinions"]["base"]["seen"] == 1


def test_a_failure_deep_in_the_chain_names_the_root_cause(chain):
    out = chain.opinions({"title": "t"}, ["twice"])  # no text: base and other fail
    message = out["errors"]["twice"]["message"]
    assert out["errors"]["base"]["name"] == "InvalidDocument"
    assert out["errors"]["twice"]["name"] in ("InvalidDocument", "DependencyFailed")
    assert "'text'" in message


# -- what the server shows -----------------------------------------------------------

def test_experts_lists_each_experts_needs(chain):
    needs = {entry["name"]: entry["needs"] for entry in chain.experts()}
    assert needs["pair"] == {"base": "left", "other": "right"}
    assert needs["twice"] == {"pair": "pair", "base": "base"}
    assert needs["base"] == {} and needs["vader"] == {}


def test_expertd_info_shows_what_an_expert_needs(chain_server):
    out = subprocess.run([EXPERTD, "info", "pair", "--endpoint", chain_server.endpoint],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "  needs:    base (as 'left'), other (as 'right'); asked first" in out.stdout
    plain = subprocess.run([EXPERTD, "info", "base", "--endpoint", chain_server.endpoint],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert plain.returncode == 0 and "needs:" not in plain.stdout


# -- the pipe stage ----------------------------------------------------------------------

def test_chains_through_the_pipe_stage(chain, chain_server):
    env = dict(os.environ, EXPERTD_ENDPOINT=chain_server.endpoint,
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    carried = {"seen": 99, "chars": -1}
    lines = [{"id": 1, "text": fresh_text()},
             {"id": 2, "text": fresh_text(), "opinions": {"base": carried}},  # an earlier stage's
             {"id": 3}]
    before = calls(chain, "base")
    stdin = "".join(json.dumps(doc) + "\n" for doc in lines).encode()
    out = subprocess.run([EXPERTD, "pipe", "twice"], input=stdin, capture_output=True,
                         env=env, timeout=60)
    docs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [doc["id"] for doc in docs] == [1, 2, 3]
    assert list(docs[0]["opinions"]) == ["base", "other", "pair", "twice"]
    assert docs[1]["opinions"]["base"] == carried
    assert docs[1]["opinions"]["twice"]["got"]["base"] == carried
    assert docs[2]["errors"]["twice"]["name"] in ("InvalidDocument", "DependencyFailed")
    assert out.returncode == 1  # document 3 got no opinion
    assert calls(chain, "base")[1] == before[1] + 1  # document 1 only: 2 carries it, 3 has no text


# -- configs that are refused --------------------------------------------------------------

BAD_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "corpus" / "chain_configs").glob("*.yaml"))


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_a_bad_chain_config_is_refused_with_a_clear_message(config):
    """Each file of tests/corpus/chain_configs/ starts with ``# expect: <part of the message>``."""
    expected = config.read_text().splitlines()[0].removeprefix("# expect: ")
    result = subprocess.run([EXPERTD, "serve", "--config", str(config), "--bind",
                             f"tcp://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode != 0, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "serving" not in result.stderr


def test_a_poisoned_input_fails_its_own_document_and_its_dependents_only(chain):
    # picky fails the whole model call when one text is poisoned; the micro-batcher
    # isolates that input, so only its document's picky and on_picky fail.
    texts = [fresh_text(), f"poison {uuid.uuid4().hex}", fresh_text()]
    out = chain.opinions_batch([{"text": t} for t in texts], ["on_picky", "base"])
    for doc in (out[0], out[2]):
        assert "errors" not in doc
        assert doc["opinions"]["on_picky"]["got"]["picky"]["seen"] == 1
    assert out[1]["errors"]["picky"]["name"] == "ExpertFailed"
    assert out[1]["errors"]["on_picky"]["name"] == "DependencyFailed"
    assert "poisoned text" in out[1]["errors"]["on_picky"]["message"]
    assert out[1]["opinions"]["base"]["seen"] == 1
