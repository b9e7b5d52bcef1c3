"""``validation.field_values``: what ``field_value`` per document gives, value or error."""

import pytest

from expertd.rpc_server.errors import ExpertdError
from expertd.rpc_server.validation import field_value, field_values


class Text(str):
    pass


class Doc(dict):
    pass


ODD = [{"text": "fine"}, {"text": "é" * 25}, {"text": "é" * 26}, {"text": "x" * 100},
       {"text": "x" * 101}, {"text": None}, {"text": 7}, {"other": "x"}, "not a doc", None, [],
       {"text": Text("sub")}, Doc(text="sub"), {"text": "\udc80"}, {"text": ""}]


def _one_by_one(docs, field, input_type, limit):
    out = []
    for i, doc in enumerate(docs):
        try:
            out.append(("ok", field_value(doc, field, input_type, limit, where=f"docs[{i}]")))
        except ExpertdError as exc:
            return out, (type(exc), str(exc))
    return out, None


@pytest.mark.parametrize("field,input_type", [("text", str), ("text", None), ("text", int),
                                              (None, None)])
def test_each_document_gives_what_field_value_gives(field, input_type):
    for start in range(len(ODD)):
        docs = [{"text": "padding"}] * 70 + ODD[start:]  # past one slice of 64
        expected, error = _one_by_one(docs, field, input_type, 100)
        if error is None:
            assert [("ok", v) for v in field_values(docs, field, input_type, 100)] == expected
        else:
            with pytest.raises(error[0]) as raised:
                field_values(docs, field, input_type, 100)
            assert str(raised.value) == error[1]
