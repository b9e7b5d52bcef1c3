"""The shell way in: call, list, info, status, stop, install-stage and the --help pages.

Real ``expertd`` processes against a real server (the odd experts: no TensorFlow).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from expertd.clients.wire import connect
from expertd.spec import ERROR, exit_code
from tests.conftest import BIN, ODD_CONFIG, ServerProcess, free_port

EXPERTD = str(BIN / "expertd")


def expertd(*args: str, endpoint: str | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, **env)
    environment.pop("EXPERTD_ENDPOINT", None)
    if endpoint:
        environment["EXPERTD_ENDPOINT"] = endpoint
    return subprocess.run([EXPERTD, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment)


@pytest.fixture
def odd(odd_server):
    """Run ``expertd`` against the odd server."""
    return lambda *args, **kw: expertd(*args, endpoint=odd_server.endpoint, **kw)


def test_call_builds_the_document_from_flags(odd):
    out = odd("call", "shouting", "--text", "HEY you")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ratio": 0.5}
    out = odd("call", "shouting", "--text=HEY", "--id", "7")  # other fields ride along
    assert json.loads(out.stdout) == {"ratio": 1.0}


def test_plain_words_are_strings(odd):
    out = odd("call", "opinion", "shouting", '{"text": "HEY"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ratio": 1.0}
    out = odd("call", "opinion", "shouting", "--text", "ab")
    assert json.loads(out.stdout) == {"ratio": 0.0}


def test_flag_document_goes_where_the_method_takes_it(odd):
    out = odd("call", "opinions", "--id", "3", "--text", "HEY", '["shouting"]')
    assert json.loads(out.stdout) == {"id": 3, "text": "HEY",
                                      "opinions": {"shouting": {"ratio": 1.0}}}
    out = odd("call", "batch", "shouting", "--text", "HEY")
    assert json.loads(out.stdout) == [{"ratio": 1.0}]


def test_call_mistakes_are_one_line(odd):
    out = odd("call", "health", "--text", "x")
    assert out.returncode == 2 and "health takes no document" in out.stderr
    out = odd("call", "opinion", "nosuch", "--text", "x")
    assert out.returncode == exit_code(ERROR.UnknownExpert)  # the catalogue's, as the pipe's
    assert out.stderr.startswith("expertd call: UnknownExpert: unknown expert 'nosuch'")
    assert "expertd list" in out.stderr
    out = odd("call", "nosuch")
    assert out.returncode == exit_code(ERROR.UnknownMethod) and "UnknownMethod" in out.stderr
    assert "Traceback" not in out.stderr


def test_call_options_after_the_method(odd_server):
    out = expertd("call", "shouting", "--text", "HEY", "--endpoint", odd_server.endpoint,
                  "--timeout", "10")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ratio": 1.0}


def test_list_and_info_come_from_the_server(odd):
    out = odd("list")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^  shouting +v0 +reads 'text'  Share of upper-case letters", out.stdout, re.M)
    assert re.search(r"^  opinion\(name, doc, options\) +Return the opinion of expert name on", out.stdout,
                     re.M)
    assert "``" not in out.stdout
    out = odd("info", "vader")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "vader (version 3.3.2)"
    assert "  reads:    the 'text' field of a JSON-object document" in lines
    assert "  batching: up to 64 documents per model call, waiting up to 0 ms for more" in lines
    assert ('  opinion:  {"compound": "number", "pos": "number", "neu": "number", '
            '"neg": "number", "label": "string"}') in lines
    out = odd("info", "nosuch")
    assert out.returncode == 2 and "has no expert 'nosuch'; it runs: slow, failing" in out.stderr


def test_method_help_is_the_servers_docstring_without_markup(odd):
    out = odd("call", "opinions", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: expertd call opinions doc names options\n"
                                 "   or: expertd call opinions names options --FIELD VALUE ...\n\n"
                                 "Return doc with opinions.<name> added by each expert in names")
    assert "``" not in out.stdout


@pytest.mark.parametrize("command", ["", "serve", "check", "call", "list", "info", "status",
                                     "stop", "install-stage", "pipe", "init", "models",
                                     "models train", "state", "state show", "state reset"])
def test_help_pages_have_no_markup(command):
    out = expertd(*command.split(), "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage: expertd" in out.stdout
    for markup in ("``", ":func:", ":class:", "\b"):
        assert markup not in out.stdout, (command, markup)
    assert not any(line.strip() == "\\b" for line in out.stdout.splitlines())


def test_status_says_who_answers(odd_server):
    out = expertd("status", endpoint=odd_server.endpoint)
    assert out.returncode == 0
    pid = odd_server.process.pid
    assert re.fullmatch(rf"expertd \S+ is ok on {odd_server.endpoint}: pid {pid}, up \d+:\d\d:\d\d, "
                        r"experts: slow, failing, shouting, vader\n", out.stdout), out.stdout
    nobody = f"tcp://127.0.0.1:{free_port()}"
    out = expertd("status", endpoint=nobody)
    assert out.returncode == 3 and out.stdout.startswith(f"no expertd server answers at {nobody}")
    assert expertd("status", "-q", endpoint=nobody).stdout == ""


def test_install_stage_refuses_experts_the_server_does_not_have(odd_server, tmp_path):
    out = expertd("install-stage", "shouting", "nosuch", "--dir", str(tmp_path),
                  endpoint=odd_server.endpoint)
    assert out.returncode == 2
    assert "has no expert 'nosuch'; it runs: slow, failing, shouting, vader" in out.stderr
    assert list(tmp_path.iterdir()) == []
    out = expertd("install-stage", "shouting", "--dir", str(tmp_path), endpoint=odd_server.endpoint)
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path / "expert_shouting")


def test_install_stage_warns_when_no_server_answers(tmp_path):
    out = expertd("install-stage", "anything", "--dir", str(tmp_path),
                  endpoint=f"tcp://127.0.0.1:{free_port()}")
    assert out.returncode == 0
    assert "warning: no server answers at" in out.stderr
    assert (tmp_path / "expert_anything").exists()


def test_stop_drains_then_exits(tmp_path):
    proc = ServerProcess(ODD_CONFIG, tmp_path)
    try:
        out = expertd("stop", endpoint=proc.endpoint)
        assert out.returncode == 0, (out.returncode, out.stdout, out.stderr, proc.read_log())
        assert out.stdout.splitlines() == [
            f"stopping expertd (pid {proc.process.pid}) on {proc.endpoint}: SIGTERM, in-flight "
            f"calls finish", "stopped"]
        assert proc.process.wait(30) == 0
    finally:
        proc.stop()
    if not any(key.startswith("TF_NUM_") for key in os.environ):  # the user's sizes win
        cores = len(os.sched_getaffinity(0))  # one process leaves its serving loop a core
        assert (f"TensorFlow thread pools: TF_NUM_INTRAOP_THREADS={max(1, cores - 1)}"
                in proc.read_log())
    out = expertd("stop", endpoint=proc.endpoint)
    assert out.returncode == 3 and "nothing to stop" in out.stderr


def test_stop_kills_after_the_timeout(tmp_path):
    proc = ServerProcess(ODD_CONFIG, tmp_path, "--drain-timeout", "120")
    try:
        connection = connect(proc.endpoint, timeout=60)
        connection.send("slow", {"text": "x"})  # 15 s
        connection.call("health")  # answered after the slow call was dispatched: it is in flight
        out = expertd("stop", "--timeout", "2", endpoint=proc.endpoint)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "killed"
        assert "still running after 2 s: SIGKILL" in out.stderr
        assert proc.process.wait(30) == -9
        connection.close()
    finally:
        proc.stop()
