"""The pipe's and the CLI's messages say what to do (issue #23, point 7), against a real server.

- a plain-text line is written through with a suggestion built from it:
  send ``{"text": "I love it"}``;
- an unknown expert: ``expertd call`` and ``expertd pipe`` exit with the error
  catalogue's status for ``UnknownExpert`` and both name the expert, list the
  known ones and say how to see them (``expertd list``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from expertd.spec import ERROR, exit_code
from tests.conftest import EXPERTD, ServerProcess

VADER_CONFIG = Path(__file__).resolve().parents[1] / "vader_experts.yaml"


@pytest.fixture(scope="module")
def vader_server(tmp_path_factory):
    """A server of the fast ``vader`` expert (no TensorFlow)."""
    proc = ServerProcess(VADER_CONFIG, tmp_path_factory.mktemp("vader"))
    yield proc
    proc.stop()


def expertd(server, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """Run ``expertd ARGS`` against ``server``."""
    env = dict(os.environ, EXPERTD_ENDPOINT=server.endpoint)
    return subprocess.run([EXPERTD, *args], input=stdin, capture_output=True, env=env,
                          timeout=60)


def test_plain_text_line_gets_a_suggestion(vader_server):
    out = expertd(vader_server, "pipe", "vader", stdin=b"I love it\n")
    assert out.stdout == b"I love it\n"
    err = out.stderr.decode()
    assert "line 1: not valid JSON" in err
    assert 'such as {"text": "I love it"}' in err, err
    assert "Traceback" not in err


def test_long_plain_text_suggestion_is_shortened(vader_server):
    text = "I love this product so much, it is the best thing I have ever bought " * 5
    out = expertd(vader_server, "pipe", "vader", stdin=text.encode() + b"\n")
    err = out.stderr.decode()
    suggested = err.split("such as ", 1)[1].split("; written through", 1)[0]
    document = json.loads(suggested)
    assert text.startswith(document["text"].rstrip("\u2026")) and len(document["text"]) <= 40


def test_not_an_object_gets_a_suggestion(vader_server):
    out = expertd(vader_server, "pipe", "vader", stdin=b'["I love it"]\n')
    err = out.stderr.decode()
    assert "not a JSON object" in err and 'send one JSON object per line, such as {"text":' in err


@pytest.mark.parametrize("command", [("call", "opinion", "nosuch", "--text", "x"),
                                     ("pipe", "nosuch")])
def test_unknown_expert_exit_and_message(vader_server, command):
    out = expertd(vader_server, *command, stdin=b'{"text": "x"}\n')
    err = out.stderr.decode()
    assert out.returncode == exit_code(ERROR.UnknownExpert), (out.returncode, err)
    assert "UnknownExpert" in err and "'nosuch'" in err and "vader" in err, err
    assert "expertd list" in err, err
    assert "Traceback" not in err
