"""deploy/haproxy.cfg on loopback in front of two servers (standing in for two machines).

Needs Debian's ``haproxy`` (the Makefile installs it); skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import EXPERTD, ROOT, ServerProcess, free_port
from tests.e2e.test_workers import VADER_CONFIG, health_over_fresh_connection, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(),
                                reason="haproxy is not installed (make test installs it)")


class HAProxy:
    """HAProxy running deploy/haproxy.cfg in the foreground, its log in a file."""

    def __init__(self, tmp: Path, backends: list[tuple[str, int]]) -> None:
        """Front ``backends`` (``(endpoint, health_port)``) on a free loopback port."""
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ, EXPERTD_LISTEN=f"127.0.0.1:{self.port}")
        for name, (endpoint, health_port) in zip("AB", backends):
            env[f"EXPERTD_{name}"] = endpoint.removeprefix("tcp://")
            env[f"EXPERTD_{name}_HEALTH"] = str(health_port)
        self.log_path = tmp / "haproxy.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(HAPROXY_CFG)], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers(), 30, "HAProxy to pass calls")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"haproxy exited:\n{self.log_path.read_text()}")
        try:
            health_over_fresh_connection(self.endpoint)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """Stop HAProxy."""
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture
def two_machines(tmp_path):
    """Two single-process servers with health ports, and HAProxy in front of them."""
    servers = []
    for name in "ab":
        health_port = free_port()
        folder = tmp_path / name
        folder.mkdir()
        server = ServerProcess(VADER_CONFIG, folder, "--health-port", str(health_port))
        server.health_port = health_port
        servers.append(server)
    proxy = HAProxy(tmp_path, [(s.endpoint, s.health_port) for s in servers])
    yield proxy, servers
    proxy.stop()
    for server in servers:
        server.stop()


def test_calls_through_haproxy_are_answered_by_both_machines(two_machines):
    proxy, servers = two_machines
    pids = {s.process.pid for s in servers}
    seen = set()
    for _ in range(100):
        seen.add(health_over_fresh_connection(proxy.endpoint)["pid"])
        if seen == pids:
            break
    assert seen == pids


def test_stopping_one_machine_under_a_pipe_stream_loses_no_document(two_machines):
    proxy, servers = two_machines
    env = dict(os.environ, EXPERTD_ENDPOINT=proxy.endpoint)
    pipe = subprocess.Popen([EXPERTD, "pipe", "--lines", "--batch-size", "50", "--timeout", "30",
                             "vader"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.extend(pipe.stdout))
    reader.start()
    total, stopped = 6000, None
    for i in range(total):
        pipe.stdin.write(json.dumps({"i": i, "text": f"doc {i}, not bad at all"}).encode() + b"\n")
        if i % 100 == 0:
            pipe.stdin.flush()
            time.sleep(0.01)
        if i == total // 3:
            # the stream spreads over two connections, which HAProxy (leastconn)
            # gives one to each machine: stop one of them
            busy = [s for s in servers if "call opinions_batch" in s.read_log()]
            assert len(busy) == 2, "the pipe's chunks should reach both machines"
            stopped = busy[0]
            stopped.process.send_signal(signal.SIGTERM)
    pipe.stdin.close()
    assert pipe.wait(120) == 0, pipe.stderr.read().decode()
    reader.join()
    docs = [json.loads(line) for line in out]
    assert [d["i"] for d in docs] == list(range(total))
    assert all("compound" in d["opinions"]["vader"] and "errors" not in d for d in docs)
    assert stopped.process.wait(60) == 0
    other = next(s for s in servers if s is not stopped)
    assert "call opinions_batch" in other.read_log()  # the rest went to the other machine
    assert health_over_fresh_connection(proxy.endpoint)["pid"] == other.process.pid
