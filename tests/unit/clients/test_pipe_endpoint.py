"""The pipe stage's fast path leaves a malformed endpoint to click (one line, exit 2), and
``run`` refuses one before reading a line (for callers that build ``PipeOptions`` themselves)."""

import io

from expertd.clients.pipe import PipeOptions, parse_fast, run


def test_the_fast_parser_hands_a_malformed_endpoint_to_click(monkeypatch):
    monkeypatch.delenv("EXPERTD_ENDPOINT", raising=False)
    assert parse_fast(["--endpoint", "localhost:4242", "vader"]) is None
    assert parse_fast(["--endpoint=tcp://127.0.0.1", "vader"]) is None
    monkeypatch.setenv("EXPERTD_ENDPOINT", "http://localhost:3000")
    assert parse_fast(["vader"]) is None


def test_the_fast_parser_keeps_a_good_endpoint(monkeypatch):
    monkeypatch.setenv("EXPERTD_ENDPOINT", "tcp://[::1]:5000")
    assert parse_fast(["vader"]).endpoint == "tcp://[::1]:5000"
    assert parse_fast(["--endpoint", "ipc:///tmp/x", "vader"]).endpoint == "ipc:///tmp/x"


def test_run_refuses_a_malformed_endpoint_in_one_line():
    stderr, stdout = io.StringIO(), io.BytesIO()
    code = run(PipeOptions(["vader"], endpoint="localhost:4242"), stdin_fd=0, stdout=stdout, stderr=stderr)
    assert code == 2
    assert stderr.getvalue() == ("expertd pipe: endpoint 'localhost:4242' has no transport: "
                                 "did you mean tcp://localhost:4242?\n")
    assert stdout.getvalue() == b""
