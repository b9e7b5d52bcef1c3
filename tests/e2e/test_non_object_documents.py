"""A document that is not a JSON object gets its own ``InvalidDocument`` (issue 23, point 3).

Against the default server, through the stock ``zerorpc.Client``.
"""

from __future__ import annotations

import pytest
import zerorpc

NOT_OBJECTS = ["just a string", 42, None, [1, 2], True]
GOOD = {"text": "I love it"}


def remote_error(call, *args) -> zerorpc.RemoteError:
    """Call and return the RemoteError it raises (fails the test if none)."""
    with pytest.raises(zerorpc.RemoteError) as info:
        call(*args)
    return info.value


def test_opinions_batch_answers_each_non_object_with_its_own_invalid_document(client):
    for options in (None, {"only_opinions": True}, {"include_needs": False}):
        answers = client.opinions_batch([GOOD, *NOT_OBJECTS, GOOD], ["vader", "consensus"], options)
        assert len(answers) == len(NOT_OBJECTS) + 2
        for answer in (answers[0], answers[-1]):
            assert set(answer["opinions"]) >= {"vader", "consensus"} and "errors" not in answer
        for doc, answer in zip(NOT_OBJECTS, answers[1:-1]):
            assert answer["opinions"] == {}, (doc, answer)
            needs = (options or {}).get("include_needs", True)
            names = {"vader", "consensus"} | ({"sentiment"} if needs else set())
            assert set(answer["errors"]) == names, (doc, answer)
            for error in answer["errors"].values():
                assert error["name"] == "InvalidDocument"
                assert "must be a JSON object" in error["message"]


@pytest.mark.parametrize("doc", NOT_OBJECTS, ids=repr)
def test_every_method_answers_a_non_object_document_invalid_document(client, doc):
    for call, args in ((client.opinion, ("vader", doc)), (client.opinions, (doc, ["vader"])),
                       (client.vader, (doc,)), (client.consensus, (doc,))):
        err = remote_error(call, *args)
        assert err.name == "InvalidDocument" and "must be a JSON object" in err.msg, (call, err)
    err = remote_error(client.batch, "vader", [GOOD, doc])
    assert err.name == "InvalidDocument" and err.msg.startswith("docs[1] must be a JSON object")
    [answer] = client.opinions_batch([doc], ["vader"])
    assert answer == {"opinions": {}, "errors": {"vader": {
        "name": "InvalidDocument", "message": answer["errors"]["vader"]["message"]}}}
    assert "must be a JSON object" in answer["errors"]["vader"]["message"]
    learned = client.learn("learner", [doc])
    assert learned["accepted"] == 0
    assert [(r["index"], r["name"]) for r in learned["refused"]] == [(0, "InvalidDocument")]
