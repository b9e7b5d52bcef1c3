"""An expert may read the whole document (``field = None``), as a stdin/stdout script does."""

from __future__ import annotations

from expertd import Expert, FunctionExpert, whole_document
from expertd.rpc_server.chain_runner import chain_input
from expertd.rpc_server.validation import field_value


@whole_document
def opinion(doc):
    """What a stdin/stdout script's opinion(doc) computes, unchanged."""
    return {"fields": sorted(doc)}


class Keys(Expert):
    """An Expert subclass that reads the whole document."""

    field = None

    def predict(self, docs):
        return [{"n": len(doc)} for doc in docs]


def test_a_marked_function_reads_the_whole_document():
    expert = FunctionExpert(opinion)
    assert expert.field is None
    assert expert.describe()["field"] is None and expert.describe()["reads"] == "document"
    assert expert.predict([{"title": "t", "body": "b"}]) == [{"fields": ["body", "title"]}]


def test_field_experts_still_say_which_field():
    assert FunctionExpert(len).describe()["reads"] == "field"
    assert Keys().describe()["reads"] == "document"


def test_the_server_hands_over_a_copy_of_the_document():
    doc = {"title": "t"}
    value = field_value(doc, None, dict, max_text_bytes=10)
    assert value == doc and value is not doc  # the expert may add keys; the caller's stays whole


def test_a_chained_whole_document_expert_gets_the_document_and_the_opinions():
    answers = {"keys": [type("A", (), {"value": {"n": 1}})()]}
    assert chain_input(None, {"title": "t"}, {"keys": "k"}, answers, 0) == {"title": "t", "k": {"n": 1}}
