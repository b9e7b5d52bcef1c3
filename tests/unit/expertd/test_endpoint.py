"""The one endpoint parser: valid forms, each malformed form, and its one-line messages.

The cases live in ``tests/corpus/endpoints.json``, which the Node parser's test
(``express_bridge/test/endpoint.test.js``) reads too: both languages give the
same answers, word for word.
"""

import json

import pytest

from expertd import spec
from expertd.endpoint import Endpoint, EndpointError, parse_endpoint, shown
from tests.conftest import ROOT

CASES = json.loads((ROOT / "tests" / "corpus" / "endpoints.json").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", CASES, ids=[repr(c["text"]) + (" bind" if c.get("binding") else "")
                                             for c in CASES])
def test_the_shared_cases(case):
    binding = case.get("binding", False)
    if "parsed" in case:
        assert parse_endpoint(case["text"], binding=binding)._asdict() == case["parsed"]
    else:
        with pytest.raises(EndpointError) as caught:
            parse_endpoint(case["text"], binding=binding)
        assert str(caught.value) == case["error"]


def test_every_message_is_one_line_that_says_what_to_do():
    errors = [c for c in CASES if "error" in c]
    assert len(errors) >= 30
    for case in errors:
        message = case["error"]
        assert len(message.splitlines()) == 1, message
        assert "did you mean" in message or "expected" in message or "e.g." in message \
            or "only" in message, message


def test_the_corpus_covers_the_forms_the_issue_names():
    texts = {c["text"]: c for c in CASES}
    assert "did you mean tcp://localhost:4242?" in texts["localhost:4242"]["error"]
    assert "did you mean tcp://127.0.0.1:4242?" in texts["tcp://127.0.0.1"]["error"]
    assert "from 1 to 65535" in texts["tcp://127.0.0.1:99999"]["error"]
    assert "HTTP address" in texts["http://localhost:3000"]["error"]
    assert "empty" in texts[""]["error"]
    assert "has no host" in texts["tcp://:4242"]["error"]
    assert texts["tcp://[::1]:4242"]["parsed"]["host"] == "::1"
    assert texts["ipc:///tmp/expertd.sock"]["parsed"]["path"] == "/tmp/expertd.sock"
    wildcard = [c for c in CASES if c["text"] == "tcp://*:4242"]
    assert {("parsed" in c, c.get("binding", False)) for c in wildcard} == {(True, True), (False, False)}


def test_an_endpoint_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_endpoint("localhost:4242")


@pytest.mark.parametrize("text", ["tcp://127.0.0.1:4242", "tcp://[::1]:1", "ipc:///tmp/s",
                                  "tcp://host-name.example:65535"])
def test_str_gives_back_the_endpoint(text):
    assert str(parse_endpoint(text)) == text


def test_binding_forms_print_as_zeromq_takes_them():
    assert str(parse_endpoint("tcp://*:4242", binding=True)) == "tcp://*:4242"
    assert str(parse_endpoint("tcp://127.0.0.1:*", binding=True)) == "tcp://127.0.0.1:*"
    assert parse_endpoint("tcp://*:4242", binding=True).is_wildcard
    assert not parse_endpoint("tcp://127.0.0.1:4242").is_wildcard


def test_the_default_endpoint_comes_from_the_spec_and_parses():
    assert parse_endpoint(spec.DEFAULT_ENDPOINT) == Endpoint("tcp", spec.DEFAULT_HOST, spec.DEFAULT_PORT)


@pytest.mark.parametrize("port", [1, 80, 4242, 65535])
def test_every_port_in_range(port):
    assert parse_endpoint(f"tcp://127.0.0.1:{port}").port == port


@pytest.mark.parametrize("port", ["0", "65536", "99999", "4242x", "0x10", "1e3", "", " 1"])
def test_ports_out_of_range_or_not_numbers(port):
    with pytest.raises(EndpointError):
        parse_endpoint(f"tcp://127.0.0.1:{port}")


def test_suggestions_are_themselves_valid():
    """Following a "did you mean X?" gives an endpoint that parses."""
    for case in CASES:
        message = case.get("error", "")
        if "did you mean " in message:
            suggestion = message.rsplit("did you mean ", 1)[1].rstrip("?")
            parse_endpoint(suggestion, binding=True)  # raises if the advice is malformed


def test_shown_keeps_a_message_on_one_line():
    assert shown("a\nb") == "'a\\nb'"
    assert shown("\x00\x7f\u2028") == "'\\x00\\x7f\\u2028'"
    assert shown("it's") == "'it\\'s'"


def test_not_a_string():
    for value in (None, 4242, b"tcp://127.0.0.1:4242"):
        with pytest.raises(EndpointError):
            parse_endpoint(value)
