"""``opinions_batch`` with ``only_opinions`` answers exactly the opinion keys of the full answer.

A pipe stage asks with ``only_opinions`` and its server takes a short path for the
documents that carry nothing of their own (``Experts._only_opinions``). Whatever path a
document takes, its answer must be the full answer's ``opinions``, ``errors``,
``recomputed`` and ``versions``: checked on a corpus of ordinary and odd documents (ones
carrying opinions, forged ones, errors, versions; not objects; no field; a field of the
wrong type), in one call, through a real service with a micro-batcher and a thread pool.
"""

from __future__ import annotations

import json
from pathlib import Path

from gevent.threadpool import ThreadPool

from expertd.experts.base import Expert
from expertd.rpc_server.batching import MicroBatcher
from expertd.rpc_server.service import Experts
from expertd.rpc_server.stats import Stats

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
KEYS = ("opinions", "errors", "recomputed", "versions")


class Length(Expert):
    """The length of the text; fails on a text that says so."""

    opinion_schema = {"type": "object", "required": ["length"],
                      "properties": {"length": {"type": "integer", "minimum": 0}},
                      "additionalProperties": False}

    def predict(self, inputs):
        """``{"length": n}`` per text, or a failure for "fail"."""
        if "fail" in inputs:
            raise ValueError("asked to fail")
        return [{"length": len(text)} for text in inputs]


def documents() -> list:
    """Ordinary documents around odd ones, many of each (the short path works in slices)."""
    odd = [
        {"text": "carries another expert's opinion", "opinions": {"other": {"x": 1}}},
        {"text": "carries this expert's own", "opinions": {"length": {"length": 25}}},
        {"text": "carries a forged one", "opinions": {"length": {"length": -1}}},
        {"text": "carries one that is not an object", "opinions": {"length": "long"}},
        {"text": "opinions not an object", "opinions": ["length"]},
        {"text": "carries errors", "errors": {"length": {"name": "Old", "message": "old"}}},
        {"text": "carries errors of another", "errors": {"other": {"name": "X", "message": "x"}}},
        {"text": "carries recomputed", "recomputed": {"length": "before"}},
        {"text": "carries versions", "versions": {"length": "1"}},
        {"text": "fail"},
        {"no_text": "at all"},
        {"text": 42},
        {"text": ""},
        "a string", 7, None, ["a", "list"], True,
    ]
    for line in (CORPUS / "forged_opinions.jsonl").read_text().splitlines():
        odd.append(json.loads(line)["doc"])
    docs = []
    for i in range(300):
        docs.append({"id": i, "text": "plain " * (i % 7)})
        if i % 9 == 0:
            docs.append(odd[(i // 9) % len(odd)])
    return docs + odd


def test_only_opinions_is_the_full_answer_restricted_to_its_keys():
    expert = Length("length")
    service = Experts({"length": expert}, {"length": MicroBatcher(expert, ThreadPool(1))},
                      Stats(["length"]), 100_000)
    docs = documents()
    full = service.opinions_batch(docs, ["length"])
    slim = service.opinions_batch(docs, ["length"], {"only_opinions": True})
    assert len(full) == len(slim) == len(docs)
    for doc, whole, answer in zip(docs, full, slim):
        expected = {key: whole[key] for key in KEYS if key in whole}
        assert answer == expected, doc
        assert list(answer) == list(expected), doc  # the same keys in the same order
    plain = [a for d, a in zip(docs, slim) if isinstance(d, dict) and set(d) == {"id", "text"}]
    assert plain[3] == {"opinions": {"length": {"length": 18}}}
