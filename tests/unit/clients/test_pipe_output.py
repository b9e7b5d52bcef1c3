"""How the pipe stage writes a server's answer into a line (``clients.pipe.output.answered_line``)."""

from __future__ import annotations

import json

from expertd.clients.pipe.output import answered_line
from expertd.clients.pipe.reading import Item

FRESH = {"valence": 1.2, "label": "positive", "confidence": 0.9}
VERDICT = {"valence": 0.8, "label": "positive", "agree": True,
           "labels": {"sentiment": "positive", "rules": "positive"}}
REASON = "not reused: the document carried an opinion that breaks its opinion_schema: valence: 1e+308"


def line_of(doc: dict, answer: dict) -> dict:
    raw = json.dumps(doc).encode() + b"\n"
    data, complete, errors = answered_line(Item(1, raw, json.loads(raw)), answer, ("consensus",))
    assert complete and errors == {}
    return json.loads(data)


def test_the_reason_an_opinion_was_recomputed_is_written_into_the_line():
    doc = {"id": 1, "text": "x", "opinions": {"sentiment": {"valence": 1e308}}}
    answer = {"opinions": {"sentiment": FRESH, "consensus": VERDICT},
              "recomputed": {"sentiment": REASON}}
    assert line_of(doc, answer) == {"id": 1, "text": "x", "opinions": answer["opinions"],
                                    "recomputed": {"sentiment": REASON}}


def test_a_recomputed_key_the_line_carries_is_kept_and_never_written_twice():
    doc = {"text": "x", "recomputed": "a field of the caller's own"}
    out = line_of(doc, {"opinions": {"consensus": VERDICT}})
    assert out == {"text": "x", "recomputed": "a field of the caller's own",
                   "opinions": {"consensus": VERDICT}}
    raw = json.dumps(doc).encode() + b"\n"
    data, _, _ = answered_line(Item(1, raw, json.loads(raw)),
                               {"opinions": {"consensus": VERDICT}, "recomputed": {"sentiment": REASON}},
                               ("consensus",))
    assert data.count(b'"recomputed"') == 1 and json.loads(data)["recomputed"] == {"sentiment": REASON}
