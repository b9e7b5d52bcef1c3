"""Every way out of the pipe stage writes every line it read: signals, refusals, dead servers."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, free_port, wait_for

EXPERTD = str(BIN / "expertd")


def stage_env(endpoint: str, **extra) -> dict:
    """Environment for a stage that talks to ``endpoint``."""
    return dict(os.environ, EXPERTD_ENDPOINT=endpoint, PYTHONPATH=str(ROOT),
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def read_position(pid: int) -> int:
    """How far process ``pid`` has read its stdin (a regular file)."""
    with open(f"/proc/{pid}/fdinfo/0") as info:
        return int(info.readline().split()[1])


_pending: dict[int, bytes] = {}


def wait_until_full(fd: int, seconds: float = 30.0) -> None:
    """Wait until the pipe read at ``fd`` holds as much as its writer can put in it
    (what is queued stops growing, at 16 KiB at least), so that its writer meets EAGAIN."""
    import fcntl
    import termios

    deadline, last, steady = time.monotonic() + seconds, -1, 0
    while time.monotonic() < deadline:
        queued = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        steady = steady + 1 if queued == last else 0
        last = queued
        if queued >= 16384 and steady >= 5:
            return
        time.sleep(0.1)
    raise AssertionError(f"the pipe never filled (it holds {last} bytes)")


def readline_within(stream, seconds: float) -> bytes:
    """One line from ``stream`` (read unbuffered), or fail if none comes within ``seconds``."""
    fd = stream.fileno()
    deadline = time.monotonic() + seconds
    while b"\n" not in _pending.get(fd, b""):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "no output line in time"
        chunk = os.read(fd, 65536)
        assert chunk, "output ended"
        _pending[fd] = _pending.get(fd, b"") + chunk
    line, _, rest = _pending.pop(fd).partition(b"\n")
    _pending[fd] = rest
    return line + b"\n"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """A server of its own whose expert takes 20 s a call."""
    from tests.conftest import ServerProcess

    proc = ServerProcess(Path(__file__).resolve().parents[1] / "pipe_slow.yaml",
                         tmp_path_factory.mktemp("slow"))
    yield proc
    proc.stop(signal.SIGKILL)  # its calls in flight are the tests' leftovers


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_every_line_read(slow_server, tmp_path, sig):
    # Line 1 is answered at once (InvalidDocument needs no model); the slow
    # expert holds lines 2-5 in flight when the signal comes.
    lines = [b'{"text": 5}\n'] + [json.dumps({"n": n, "text": "wait"}).encode() + b"\n"
                                  for n in range(2, 6)] + [b"not json, last line"]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(lines))
    with open(source, "rb") as stdin:
        proc = subprocess.Popen([EXPERTD, "pipe", "--batch-size", "1", "slow"], stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=stage_env(slow_server.endpoint))
    try:
        wait_for(lambda: read_position(proc.pid) == source.stat().st_size, what="reading")
        first = readline_within(proc.stdout, 30)
        assert json.loads(first)["errors"]["slow"]["name"] == "InvalidDocument"
        proc.send_signal(sig)
        early = _pending.pop(proc.stdout.fileno(), b"")
        out, err = proc.communicate(timeout=30)
        out = early + out
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig
    # The last line came without a newline: it goes out byte for byte, without one.
    assert out == b"".join(lines[1:])
    assert f"stopped by {sig.name}".encode() in err and b"Traceback" not in err


def test_bad_first_line_still_streams(env):
    # A first line that is not JSON (or only the start of a document) must not
    # make the stage read all of stdin before it writes anything.
    for first in (b"garbage\n", b'{"text": "cut off", \n'):
        proc = subprocess.Popen([EXPERTD, "pipe", "vader"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            proc.stdin.write(first)
            proc.stdin.flush()
            for n in range(3):
                proc.stdin.write(json.dumps({"n": n, "text": "good"}).encode() + b"\n")
                proc.stdin.flush()
                if n == 0:
                    assert readline_within(proc.stdout, 30) == first
                assert json.loads(readline_within(proc.stdout, 30))["n"] == n
            proc.stdin.close()
            assert proc.wait(30) == 1
        finally:
            proc.kill()


def test_pretty_printed_document_after_a_slow_start(env):
    proc = subprocess.Popen([EXPERTD, "pipe", "vader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        for part in (b"{\n", b'  "text": "a lovely day",\n', b'  "n": [1,\n 2]\n', b"}\n"):
            proc.stdin.write(part)
            proc.stdin.flush()
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["n"] == [1, 2] and doc["opinions"]["vader"]["label"] == "positive"


def test_timeout_bounds_a_port_that_never_speaks_zmtp():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts TCP connections (the kernel does), never answers
        endpoint = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        out = subprocess.run([EXPERTD, "pipe", "--timeout", "1", "vader"],
                             input=b'{"text": "a"}\n{"text": "b"}\n', capture_output=True,
                             env=stage_env(endpoint), timeout=60)
        took = time.monotonic() - began
    assert out.returncode == 3
    assert out.stdout == b'{"text": "a"}\n{"text": "b"}\n'
    assert endpoint.encode() in out.stderr and b"expertd serve" in out.stderr
    # The old stage waited 5 s for a ZMTP greeting whatever --timeout said.
    assert took < 4.5, took


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
def test_a_full_non_blocking_stdout_is_waited_for_not_lost(env, tmp_path, unbuffered):
    # A stdout that another program made non-blocking (Node does it to the
    # stdio it shares) answers EAGAIN when the pipe is full: the stage must wait
    # for the reader, neither give up on the lines nor write any twice. With
    # PYTHONUNBUFFERED, stdout is a raw file whose writes may be short.
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    lines = [json.dumps({"n": n, "text": "a lovely, happy day " * 10}).encode() + b"\n"
             for n in range(3000)]  # ~700 KB, ten times a pipe's buffer
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(lines))
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the flag belongs to the file both ends of the dup share
    try:
        with open(source, "rb") as stdin:
            proc = subprocess.Popen([EXPERTD, "pipe", "--lines", "vader"], stdin=stdin,
                                    stdout=write_end, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(write_end)
    try:
        wait_until_full(read_end)  # nobody reads: the pipe fills and the stage's writes meet EAGAIN
        time.sleep(0.5)
        with os.fdopen(read_end, "rb") as reader:
            out = reader.read()
        err = proc.stderr.read()
        assert proc.wait(30) == 0, err
    finally:
        proc.kill()
    assert [json.loads(line)["n"] for line in out.splitlines()] == list(range(3000))
    assert b"Traceback" not in err and b"internal error" not in err


def test_a_non_blocking_stdin_that_is_empty_for_now_is_waited_for(env):
    # The same for stdin: a non-blocking one with nothing in it yet answers
    # EAGAIN, which is not the end of the input.
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        proc = subprocess.Popen([EXPERTD, "pipe", "--lines", "vader"], stdin=read_end,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    finally:
        os.close(read_end)
    try:
        out_fd = proc.stdout.fileno()
        with os.fdopen(write_end, "wb", buffering=0) as writer:
            answers = []
            for n in range(5):
                writer.write(json.dumps({"n": n, "text": "a lovely day"}).encode() + b"\n")
                # the stage answers it, then finds stdin empty (EAGAIN) until the next line
                answers.append(json.loads(readline_within(proc.stdout, 30))["n"])
                time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert answers == list(range(5)) and _pending.pop(out_fd, b"") + out == b""
    assert b"Traceback" not in err


def test_a_full_non_blocking_stderr_costs_no_line_and_no_warning(env, tmp_path):
    # Every bad line gets a warning on stderr; a non-blocking stderr that nobody
    # reads for a while fills up, and the stage must wait for it, as for stdout.
    lines = [f"not json {n} ".encode() + b"x" * 200 + b"\n" for n in range(3000)]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(lines))
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        with open(source, "rb") as stdin:
            proc = subprocess.Popen([EXPERTD, "pipe", "--lines", "vader"], stdin=stdin,
                                    stdout=subprocess.PIPE, stderr=write_end, env=env)
    finally:
        os.close(write_end)
    import threading

    try:
        outs: list[bytes] = []  # stdout is read all along
        reading = threading.Thread(target=lambda: outs.append(proc.stdout.read()), daemon=True)
        reading.start()
        wait_until_full(read_end)  # nobody reads stderr: it fills
        time.sleep(0.5)
        with os.fdopen(read_end, "rb") as reader:
            err = reader.read()
        reading.join(30)
        returncode = proc.wait(30)
    finally:
        proc.kill()
    assert outs and outs[0] == b"".join(lines)
    warned = {int(m) for m in re.findall(rb"line (\d+): not valid JSON", err)}
    assert warned == set(range(1, 3001)), err[-500:]
    assert returncode == 1 and b"Traceback" not in err and b"internal error" not in err


def test_closed_stdout_is_quiet(env):
    lines = b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(3000))
    out = subprocess.run(f"{EXPERTD} pipe vader | head -n 1", shell=True, input=lines,
                         capture_output=True, env=env, timeout=60)
    assert len(out.stdout.splitlines()) == 1
    assert b"Traceback" not in out.stderr and b"Exception" not in out.stderr


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    """A zerorpc server that refuses whole calls holding a poisoned document."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.pipe_peers", "refusing", endpoint],
                            cwd=ROOT, stdout=subprocess.PIPE, env=stage_env(endpoint))
    assert proc.stdout.readline() == b"ready\n"
    yield endpoint
    proc.kill()
    proc.wait()


def test_a_poisoned_document_costs_only_itself(refusing):
    lines = [json.dumps({"i": i, "text": "x"}).encode() + b"\n" for i in range(1000)]
    lines[500] = b'{"poison": true, "text": "x"}\n'
    out = subprocess.run([EXPERTD, "pipe", "vader"], input=b"".join(lines),
                         capture_output=True, env=stage_env(refusing), timeout=120)
    got = out.stdout.split(b"\n")[:-1]
    assert len(got) == 1000, out.stderr
    assert got[500] + b"\n" == lines[500]
    assert all(json.loads(got[i])["i"] == i and json.loads(got[i])["opinions"]["vader"]
               for i in range(1000) if i != 500)
    assert out.returncode == 1
    assert b"line 501: the server refused it (InternalError" in out.stderr


def test_a_server_bug_on_every_call_is_not_a_usage_error(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.pipe_peers", "refusing", endpoint,
                             "--always"], cwd=ROOT, stdout=subprocess.PIPE,
                            env=stage_env(endpoint))
    try:
        assert proc.stdout.readline() == b"ready\n"
        stdin = b'{"text": "a"}\n{"text": "b"}\nnot json\n'
        out = subprocess.run([EXPERTD, "pipe", "vader"], input=stdin, capture_output=True,
                             env=stage_env(endpoint), timeout=60)
    finally:
        proc.kill()
        proc.wait()
    from expertd.spec import exit_code

    assert out.returncode == exit_code("InternalError") != 2
    assert out.stdout == stdin
    assert b"InternalError" in out.stderr


@pytest.mark.parametrize("peer, batch_size", [("older", 256), ("older", 1), ("before-json", 256)])
def test_a_server_older_than_only_opinions_or_as_json_is_asked_without_it(tmp_path, peer,
                                                                          batch_size):
    import zerorpc

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.pipe_peers", peer, endpoint],
                            cwd=ROOT, stdout=subprocess.PIPE, env=stage_env(endpoint))
    try:
        assert proc.stdout.readline() == b"ready\n"
        lines = [json.dumps({"i": i, "text": "x"}).encode() + b"\n" for i in range(2000)]
        out = subprocess.run([EXPERTD, "pipe", "--lines", "--batch-size", str(batch_size), "vader"],
                             input=b"".join(lines), capture_output=True, env=stage_env(endpoint),
                             timeout=120)
        client = zerorpc.Client(endpoint, timeout=10)
        calls = client.calls()
        client.close()
    finally:
        proc.kill()
        proc.wait()
    got = out.stdout.splitlines()
    assert out.returncode == 0 and out.stderr == b"", out.stderr
    assert [json.loads(line)["opinions"]["vader"]["seen"] > 0 for line in got] == [True] * 2000
    assert all(line.startswith(sent[:-2] + b", ") for line, sent in zip(got, lines))
    assert 1 <= calls["refused"] <= 4  # the chunks already in flight (2 connections x 2)
    assert calls["answered"] >= 2000 // batch_size
    # a server that knows only_opinions is still asked with it (only as_json is left out)
    assert calls["only_opinions"] == (calls["answered"] if peer == "before-json" else 0)


def test_unknown_expert_stops_the_stream_with_exit_2(refusing):
    stdin = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(600))
    out = subprocess.run([EXPERTD, "pipe", "nope"], input=stdin, capture_output=True,
                         env=stage_env(refusing), timeout=60)
    assert out.returncode == 2
    assert out.stdout == stdin
    assert b"UnknownExpert" in out.stderr and out.stderr.count(b"\n") == 1


def test_a_document_over_the_servers_message_cap_costs_only_itself(tmp_path):
    from tests.conftest import ServerProcess

    server = ServerProcess(Path(__file__).resolve().parents[1] / "pipe_small_messages.yaml", tmp_path)
    try:
        lines = [json.dumps({"i": i, "text": "a good day"}).encode() + b"\n" for i in range(100)]
        lines[49] = json.dumps({"i": 49, "text": "long " * 30000}).encode() + b"\n"
        out = subprocess.run([EXPERTD, "pipe", "--timeout", "30", "vader"],
                             input=b"".join(lines), capture_output=True,
                             env=stage_env(server.endpoint), timeout=120)
    finally:
        server.stop()
    got = out.stdout.split(b"\n")[:-1]
    assert len(got) == 100, out.stderr
    assert got[49] + b"\n" == lines[49]
    assert all(json.loads(got[i])["opinions"]["vader"] for i in range(100) if i != 49)
    assert out.returncode == 1 and b"line 50: the server refused it" in out.stderr


def test_sigterm_stops_a_stage_passing_input_through_without_a_server(tmp_path):
    # No server: the stage writes its input through; a signal still stops it at once,
    # and nothing it read is lost.
    proc = subprocess.Popen([EXPERTD, "pipe", "--timeout", "0.5", "vader"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env=stage_env(f"tcp://127.0.0.1:{free_port()}"))
    try:
        proc.stdin.write(b'{"text": "a"}\n')
        proc.stdin.flush()
        assert readline_within(proc.stdout, 30) == b'{"text": "a"}\n'  # written through
        proc.stdin.write(b'{"text": "b"}\npartial')
        proc.stdin.flush()
        assert readline_within(proc.stdout, 30) == b'{"text": "b"}\n'
        proc.send_signal(signal.SIGTERM)
        early = _pending.pop(proc.stdout.fileno(), b"")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert early + out == b"partial"  # byte for byte: no newline added
    assert b"Traceback" not in err


@pytest.mark.parametrize("mode", ["--single", None])
def test_a_signal_while_a_document_is_still_arriving_writes_what_was_read(tmp_path, mode):
    # A pretty-printed document whose end has not arrived yet: its first lines
    # were taken off the reader (to see whether it is one document) when SIGTERM comes.
    args = [sys.executable, "-m", "clients.pipe", "--endpoint", "tcp://127.0.0.1:1",
            *([mode] if mode else []), "sentiment"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=stage_env("tcp://127.0.0.1:1"), cwd=ROOT)
    head = b'{\n  "text": "hello",\n'
    proc.stdin.write(head)
    proc.stdin.flush()
    time.sleep(1.0)  # the stage has read both lines and waits for more
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert out == head, (out, err)
