"""Fixtures: real expertd servers, started as processes on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXPERTD = str(BIN / "expertd")
DEFAULT_CONFIG = ROOT / "config" / "experts.yaml"
ODD_CONFIG = Path(__file__).resolve().parent / "odd_experts.yaml"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(endpoint: str, process: subprocess.Popen | None = None,
               timeout: float = 180.0) -> None:
    """Poll ``health()`` until the server answers (TensorFlow takes a while to load)."""
    from expertd.clients.wire import CallTimeout, Connection, ServerUnavailable

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with Connection(endpoint, timeout=2.0) as connection:
                connection.call("health")
                return
        except (ServerUnavailable, CallTimeout):
            time.sleep(0.2)
    raise RuntimeError(f"server at {endpoint} not ready after {timeout} s")


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (its value), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ServerProcess:
    """A real ``expertd serve`` process."""

    def __init__(self, config: Path, tmp: Path, *extra: str, endpoint: str | None = None) -> None:
        """Start it (on a free port unless ``endpoint``), logging to a file under ``tmp``."""
        self.endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
        self.log_path = tmp / f"server-{self.endpoint.rsplit(':', 1)[1]}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [EXPERTD, "serve", "--config", str(config), "--bind", self.endpoint, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_ready(self.endpoint, self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.read_log()}") from None

    def read_log(self) -> str:
        """What the server has logged so far."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it to exit; returns its status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The default experts (sentiment, genre, vader) served as a user would serve them."""
    proc = ServerProcess(DEFAULT_CONFIG, tmp_path_factory.mktemp("server"))
    yield proc
    assert proc.stop() == 0, proc.read_log()


@pytest.fixture(scope="session")
def odd_server(tmp_path_factory):
    """Experts for the awkward cases: a 15 s expert, a failing one, a plain function."""
    metrics_port = free_port()
    proc = ServerProcess(ODD_CONFIG, tmp_path_factory.mktemp("odd"), "--metrics-port",
                         str(metrics_port))
    proc.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    yield proc
    assert proc.stop() == 0, proc.read_log()


@pytest.fixture
def client(server):
    """The stock ``zerorpc.Client`` connected to the default server."""
    import zerorpc

    c = zerorpc.Client(server.endpoint, timeout=30)
    yield c
    c.close()


@pytest.fixture
def odd_client(odd_server):
    """The stock ``zerorpc.Client`` connected to the odd server."""
    import zerorpc

    c = zerorpc.Client(odd_server.endpoint, timeout=30)
    yield c
    c.close()


@pytest.fixture
def env(server):
    """Environment for subprocesses: the default server's endpoint, the venv on PATH."""
    e = dict(os.environ)
    e["EXPERTD_ENDPOINT"] = server.endpoint
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e
