"""Every command that takes an endpoint answers a malformed one with one line on stderr and exit 2.

No server is needed: the endpoint is refused before anything connects or loads.
Each command gets each malformed endpoint through its flag, and a few through
EXPERTD_ENDPOINT; the line must carry the parser's suggestion, and never a
traceback or an "internal error".
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import EXPERTD

#: Each command that takes an endpoint: its arguments before the endpoint flag, and that flag.
COMMANDS = {
    "serve": (["serve"], "--bind"),
    "check": (["check"], "--bind"),
    "status": (["status"], "--endpoint"),
    "stop": (["stop"], "--endpoint"),
    "list": (["list"], "--endpoint"),
    "info": (["info", "vader"], "--endpoint"),
    "call": (["call", "health"], "--endpoint"),
    "learn": (["learn", "learner"], "--endpoint"),
    "pipe": (["pipe", "vader"], "--endpoint"),
    "reload": (["reload"], "--endpoint"),
    "install-stage": (["install-stage", "vader", "--dir", "{tmp}"], "--endpoint"),
}

#: A malformed endpoint and what the one line must contain.
MALFORMED = {
    "localhost:4242": "did you mean tcp://localhost:4242?",
    "tcp://127.0.0.1": "did you mean tcp://127.0.0.1:4242?",
    "tcp://127.0.0.1:99999": "from 1 to 65535",
    "http://localhost:3000": "expertd speaks ZeroMQ: did you mean tcp://localhost:4242?",
    "tcp://:4242": "did you mean tcp://127.0.0.1:4242?",
    "": "endpoint is empty",
}


def run(args: list[str], env_endpoint: str | None = None, tmp: str = "/tmp") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERTD_")}
    if env_endpoint is not None:
        env["EXPERTD_ENDPOINT"] = env_endpoint
    args = [a.replace("{tmp}", tmp) for a in args]
    return subprocess.run([EXPERTD, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=60)


def assert_one_usage_line(out: subprocess.CompletedProcess, command: str, expected: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    (line,) = lines
    assert line.startswith(f"expertd {command}: "), line
    assert expected in line, line
    assert out.stdout == ""
    return line


@pytest.mark.parametrize("endpoint", MALFORMED)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_malformed_endpoint_flag_is_one_line_and_exit_2(tmp_path, command, endpoint):
    before, flag = COMMANDS[command]
    out = run([*before, flag, endpoint], tmp=str(tmp_path))
    assert_one_usage_line(out, command, MALFORMED[endpoint])
    if command == "install-stage":
        assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("endpoint", ["localhost:4242", "tcp://127.0.0.1", "http://localhost:3000"])
@pytest.mark.parametrize("command", ["call", "pipe", "status", "serve", "learn"])
def test_a_malformed_expertd_endpoint_is_one_line_and_exit_2(command, endpoint):
    before, _ = COMMANDS[command]
    out = run(before, env_endpoint=endpoint)
    line = assert_one_usage_line(out, command, MALFORMED[endpoint])
    assert "EXPERTD_ENDPOINT" in line, line  # says where the bad value came from


def test_call_checks_an_endpoint_given_after_the_method():
    out = run(["call", "health", "--endpoint=localhost:4242"])
    assert_one_usage_line(out, "call", MALFORMED["localhost:4242"])


def test_a_client_may_not_connect_to_a_wildcard_but_a_server_may_bind_it():
    out = run(["status", "--endpoint", "tcp://*:4242"])
    assert_one_usage_line(out, "status", "did you mean tcp://127.0.0.1:4242?")
    out = run(["check", "--bind", "tcp://127.0.0.1:*"])
    assert out.returncode == 0, out.stderr


def test_the_python_client_refuses_a_malformed_endpoint_when_made():
    from expertd.clients import ExpertsClient
    from expertd.endpoint import EndpointError

    with pytest.raises(EndpointError, match="did you mean tcp://localhost:4242"):
        ExpertsClient("localhost:4242")
