"""The default Keras experts' answers, through a real server, match the schemas they declare."""

from __future__ import annotations

from tests.unit.experts.test_openapi_schemas import TEXTS, assert_matches


def test_keras_experts_answers_match_their_schema(client):
    """The default Keras experts' answers, through a real server, match what ``experts()`` declares."""
    schemas = {e["name"]: e["opinion_schema"] for e in client.experts()}
    for name in ("sentiment", "genre", "vader"):
        assert schemas[name] is not None, name
        for text in TEXTS:
            assert_matches(schemas[name], client.opinion(name, {"text": text}))
