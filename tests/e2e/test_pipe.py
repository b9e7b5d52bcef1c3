"""The command-line pipe stage, as a pipeline runs it: real processes, real server."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

import pytest

from expertd.clients.wire import Connection
from tests.conftest import BIN, free_port

EXPERTD = str(BIN / "expertd")


def run(args, stdin: bytes, env, timeout=120):
    """Run a command with ``stdin``; return the completed process (bytes)."""
    return subprocess.run(args, input=stdin, capture_output=True, env=env, timeout=timeout)


def test_pipeline_of_two_stages(env):
    out = subprocess.run(
        f"echo '{{\"text\": \"I love it\", \"id\": 7}}' | {EXPERTD} pipe sentiment "
        f"| {EXPERTD} pipe genre", shell=True, capture_output=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["id"] == 7 and doc["text"] == "I love it"
    assert set(doc["opinions"]) == {"sentiment", "genre"}
    assert doc["opinions"]["sentiment"]["valence"] > 0
    assert "errors" not in doc


def test_several_names_and_key_order_and_unicode(env):
    doc = {"z": 1, "text": "Ça me plaît énormément 😍 — 素晴らしい", "a": [1, {"b": None}]}
    out = run([EXPERTD, "pipe", "sentiment", "vader"],
              json.dumps(doc, ensure_ascii=False).encode(), env)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode("utf-8")
    assert "😍" in text and "\\u" not in text  # non-ASCII written as it came
    result = json.loads(text)
    assert list(result) == ["z", "text", "a", "opinions"]
    assert {k: result[k] for k in ("z", "text", "a")} == doc
    assert set(result["opinions"]) == {"sentiment", "vader"}


def test_a_document_comes_out_as_it_came_with_its_opinions_appended(env):
    # Only the answer is encoded: the document's own text (escapes, spacing, number
    # spelling) is kept; one that carries opinions already is merged and encoded again.
    lines = [b'{"text":"caf\\u00e9 is great","n":1.50E2}\n',
             b'  {"text": "fine", "opinions": {"old": 1}, "errors": {"x": 2}} \n', b'{}\n']
    out = run([EXPERTD, "pipe", "--lines", "vader"], b"".join(lines), env)
    assert out.returncode == 1 and b"line 3: vader: InvalidDocument" in out.stderr, out.stderr
    first, second, third = out.stdout.splitlines()
    assert first.startswith(b'{"text":"caf\\u00e9 is great","n":1.50E2, "opinions": {"vader": ')
    assert json.loads(first)["n"] == 150.0
    assert second.startswith(b'{"text": "fine", "opinions": {"old": 1, "vader": {')
    assert json.loads(second)["errors"] == {"x": 2}
    assert json.loads(third)["errors"]["vader"]["name"] == "InvalidDocument"  # {} has no text


def test_pretty_printed_single_document(env):
    pretty = json.dumps({"text": "What a lovely day", "n": 1}, indent=2).encode()
    out = run([EXPERTD, "pipe", "vader"], pretty, env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["opinions"]["vader"]["label"] == "positive"


def test_10000_json_lines_with_invalid_lines_come_out_in_order(env, tmp_path):
    bad = {17: b"this is not json", 4242: b"[1, 2, 3]", 9998: b'{"text": 5}'}
    lines = []
    for i in range(10000):
        lines.append(bad.get(i, json.dumps({"i": i, "text": f"document number {i} is good"})
                             .encode()))
    out = run([EXPERTD, "pipe", "--lines", "sentiment"], b"\n".join(lines) + b"\n", env)
    assert out.returncode == 1  # some documents did not get their opinion
    got = out.stdout.split(b"\n")
    assert got[-1] == b"" and len(got) == 10001
    for i, line in enumerate(got[:-1]):
        if i in (17, 4242):
            assert line == bad[i]
        else:
            doc = json.loads(line)
            if i == 9998:
                assert doc["errors"]["sentiment"]["name"] == "InvalidDocument"
            else:
                assert doc["i"] == i and "sentiment" in doc["opinions"]
    stderr = out.stderr.decode()
    assert "line 18: not valid JSON" in stderr and "line 4243: not a JSON object" in stderr
    assert "line 9999: sentiment: InvalidDocument" in stderr


def test_json_lines_are_detected_and_flushed_as_they_go(env):
    proc = subprocess.Popen([EXPERTD, "pipe", "vader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        for n in range(3):
            proc.stdin.write(json.dumps({"text": f"good day {n}"}).encode() + b"\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "no output before the input ended"
            assert json.loads(proc.stdout.readline())["opinions"]["vader"]
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        proc.kill()


def test_unknown_expert_is_a_usage_error_and_documents_pass_through(env):
    out = run([EXPERTD, "pipe", "nope"], b'{"text": "x"}\n', env)
    assert out.returncode == 2
    assert out.stdout == b'{"text": "x"}\n'
    assert b"unknown expert 'nope'" in out.stderr


def test_no_names_is_a_usage_error(env):
    assert run([EXPERTD, "pipe"], b"{}", env).returncode == 2


def test_failing_expert_leaves_error_in_document(odd_server, env):
    env = dict(env, EXPERTD_ENDPOINT=odd_server.endpoint)
    out = run([EXPERTD, "pipe", "failing", "shouting"], b'{"text": "HEY"}', env)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["errors"]["failing"]["name"] == "ExpertFailed"
    assert doc["opinions"]["shouting"]
    assert b"failing: ExpertFailed" in out.stderr


@pytest.mark.parametrize("stdin", [b'{"text": "one"}\n', b'{"text": "a"}\n{"text": "b"}\nbad\n'])
def test_server_down_exits_3_with_documents_intact(env, stdin):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    began = time.monotonic()
    out = run([EXPERTD, "pipe", "--endpoint", endpoint, "--timeout", "1", "sentiment"],
              stdin, env)
    assert out.returncode == 3
    assert out.stdout == stdin
    assert endpoint.encode() in out.stderr and b"expertd serve" in out.stderr
    assert time.monotonic() - began < 30


def test_autostart_from_a_stopped_state(env, tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  vader: expertd.experts.vader:VaderExpert\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(env, XDG_STATE_HOME=str(tmp_path / "state"))
    out = run([EXPERTD, "pipe", "--endpoint", endpoint, "--autostart", "--config", str(config),
               "vader"], b'{"text": "Started just for me, how nice"}', env, timeout=240)
    try:
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["opinions"]["vader"]["label"] == "positive"
        assert b"started" in out.stderr
    finally:
        with Connection(endpoint, timeout=10) as connection:
            pid = connection.call("health")["pid"]
        os.kill(pid, 15)


def test_no_progress_output_when_stderr_is_not_a_terminal(env):
    lines = b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(600))
    out = run([EXPERTD, "pipe", "vader"], lines, env)
    assert out.returncode == 0 and out.stderr == b""
    assert len(out.stdout.splitlines()) == 600


def test_expert_stage_script(env, tmp_path):
    out = run([EXPERTD, "install-stage", "sentiment", "genre", "--dir", str(tmp_path)], b"", env)
    assert out.returncode == 0, out.stderr
    stage = tmp_path / "expert_sentiment"
    assert os.access(stage, os.X_OK)
    result = subprocess.run(f"echo '{{\"text\": \"I love it\"}}' | {stage} | {tmp_path}/expert_genre",
                            shell=True, capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["opinions"]) == {"sentiment", "genre"}


def test_expertd_call(env):
    out = run([EXPERTD, "call", "opinion", '"vader"', '{"text": "great"}'], b"", env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["label"] == "positive"


def test_pipe_stage_never_imports_tensorflow_or_server_code(env):
    code = ("import sys, runpy; sys.argv = ['expertd', 'pipe', 'vader'];\n"
            "try:\n    runpy.run_module('expertd.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'experts', 'rpc_server', 'zerorpc', 'gevent', 'zmq', 'click')]\n"
            "print(bad, file=sys.stderr)\nassert not bad, bad\n")
    out = run([str(BIN / "python"), "-c", code], b'{"text": "hi"}', env)
    assert out.returncode == 0, out.stderr


def test_a_one_document_stage_answered_by_the_server_loads_none_of_the_start_up_avoids(env):
    """The whole one-document path (request, reply, output line) does without the modules
    tests/unit/test_imports.py's STARTUP_AVOIDS names: msgpack, datetime, struct, re, json..."""
    from tests.unit.test_imports import STARTUP_AVOIDS

    out = run([str(BIN / "python"), "-X", "importtime", EXPERTD, "pipe", "sentiment"],
              b'{"id": 1, "text": "I love it"}\n', env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["opinions"]["sentiment"]["label"] == "positive"
    loaded = {line.rpartition("|")[2].strip() for line in out.stderr.decode().splitlines()
              if line.startswith("import time:")}
    assert "expertd.clients.lean_msgpack" in loaded
    assert not loaded & set(STARTUP_AVOIDS), loaded & set(STARTUP_AVOIDS)


def test_progress_on_a_terminal(env):
    import pty

    master, slave = pty.openpty()
    lines = b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(300))
    proc = subprocess.Popen([EXPERTD, "pipe", "vader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    out, _ = proc.communicate(lines, timeout=60)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert proc.returncode == 0 and len(out.splitlines()) == 300
    assert b"300 documents" in shown and b"/s" in shown


def test_pipe_heartbeats_through_a_15_second_expert(odd_server, env):
    # The lean client answers zerorpc heartbeats; without them the server drops
    # the call after two missed beats (10 s).
    env = dict(env, EXPERTD_ENDPOINT=odd_server.endpoint)
    out = run([EXPERTD, "pipe", "slow"], b'{"text": "take your time"}', env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["opinions"]["slow"] == {"slept": 15}


def test_stream_survives_a_server_restart(env, tmp_path):
    from tests.conftest import ServerProcess

    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  vader: expertd.experts.vader:VaderExpert\n")
    first = ServerProcess(config, tmp_path)
    env = dict(env, EXPERTD_ENDPOINT=first.endpoint)
    proc = subprocess.Popen([EXPERTD, "pipe", "--timeout", "60", "vader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    second = None
    try:
        def feed(start):
            for n in range(start, start + 5):
                proc.stdin.write(json.dumps({"n": n, "text": "a fine day"}).encode() + b"\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 30)
                assert ready
                assert json.loads(proc.stdout.readline())["n"] == n

        feed(0)
        assert first.stop() == 0
        proc.stdin.write(json.dumps({"n": 5, "text": "while nobody listens"}).encode() + b"\n")
        proc.stdin.flush()
        time.sleep(1)
        second = ServerProcess(config, tmp_path, endpoint=first.endpoint)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready
        assert json.loads(proc.stdout.readline())["opinions"]["vader"]
        feed(6)
        proc.stdin.close()
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        proc.kill()
        if second is not None:
            second.stop()
