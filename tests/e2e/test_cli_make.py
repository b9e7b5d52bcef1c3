"""``make run`` never leaves a process behind, whatever fails.

Each run is a real ``make run`` (set-up skipped with ``-o setup``: ``make
test`` has just done it) in a session of its own, serving the odd experts (no
TensorFlow). Afterwards no process of that session may remain: not the
server, not the Node bridge.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.conftest import ODD_CONFIG, ROOT, free_port

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("node") is None
                                or not (ROOT / "express_bridge" / "node_modules").is_dir(),
                                reason="needs make, node and the bridge's node_modules")


def start_make_run(tmp_path, config=ODD_CONFIG, port=None, endpoint=None):
    port = port or free_port()
    env = dict(os.environ, EXPERTD_CONFIG=str(config), PORT=str(port),
               EXPERTD_ENDPOINT=endpoint or f"tcp://127.0.0.1:{free_port()}")
    for key in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(key, None)
    log = open(tmp_path / "make.log", "wb")
    proc = subprocess.Popen(["make", "--no-print-directory", "-o", "setup", "run"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, port, tmp_path / "make.log"


def session_gone(pgid: int, within: float = 30.0) -> bool:
    """True once no process of the session ``pgid`` remains."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port: int, proc: subprocess.Popen, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and proc.poll() is None:
        if listening(port):
            return
        time.sleep(0.2)
    raise AssertionError(f"the bridge never listened on {port}")


def cleanup(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_server_that_cannot_start_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts:\n  x:\n    expert: expertd.experts.examples:shouting\n"
                   "    batch: {max_size: '64'}\n")
    proc, port, log = start_make_run(tmp_path, config=bad)
    try:
        assert proc.wait(120) != 0
        assert session_gone(proc.pid), "a process of make run is still running"
        assert not listening(port)
        text = log.read_text()
        assert "batch.max_size must be an integer" in text
        assert "expertd serve exited (1) before answering; the bridge was not started" in text
    finally:
        cleanup(proc)


def test_bridge_that_cannot_start_stops_the_server(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, port, log = start_make_run(tmp_path, port=taken.getsockname()[1])
        try:
            assert proc.wait(120) != 0
            assert session_gone(proc.pid), "a process of make run is still running"
            assert "EADDRINUSE" in log.read_text()
        finally:
            cleanup(proc)


def test_ctrl_c_stops_both(tmp_path):
    proc, port, log = start_make_run(tmp_path)
    try:
        wait_listening(port, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on the terminal does
        proc.wait(120)
        assert session_gone(proc.pid), "a process of make run is still running"
        assert not listening(port)
        assert "Traceback" not in log.read_text()
    finally:
        cleanup(proc)


def test_a_server_already_running_is_named_and_left_alone(odd_server, tmp_path):
    proc, port, log = start_make_run(tmp_path, endpoint=odd_server.endpoint)
    try:
        assert proc.wait(120) == 2  # make's status when its recipe fails
        assert session_gone(proc.pid)
        text = log.read_text()
        assert f"make run: a server already answers at {odd_server.endpoint}; stop it first" in text
        assert f"pid {odd_server.process.pid}" in text
        assert odd_server.process.poll() is None and not listening(port)
    finally:
        cleanup(proc)
