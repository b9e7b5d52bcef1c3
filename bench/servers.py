"""The servers a benchmark needs, started on free loopback ports and always stopped.

``Fleet`` is a context manager: every process it starts gets its own session
(so a Ctrl-C in the terminal reaches only the runner, which then stops them
in order), logs to ``bench/tmp/logs/``, and is terminated (SIGTERM, then
SIGKILL to its process group) when the block exits for any reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import EXPERTD, PYTHON, ROOT, TMP, child_env, free_port


class StartError(RuntimeError):
    """A server did not become ready; the message ends with its log."""


@dataclass
class Server:
    """One started server process."""

    name: str
    process: subprocess.Popen
    log_path: Path
    url: str  # tcp://... for expertd, http://... for HTTP servers
    started: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None

    @property
    def pid(self) -> int:
        """The process id of the server (the master for gunicorn)."""
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None


def _expertd_ready(endpoint: str) -> bool:
    from expertd.clients.wire import CallTimeout, Connection, RemoteError, ServerUnavailable

    try:
        with Connection(endpoint, timeout=2.0) as connection:
            connection.call("health")
            return True
    except (ServerUnavailable, CallTimeout, RemoteError, OSError):
        return False


def _http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Fleet:
    """Starts servers, waits for them, and stops them all on exit."""

    def __init__(self, log_dir: Path = TMP / "logs", cpus: set[int] | None = None) -> None:
        """Logs go to ``log_dir``; with ``cpus``, every server runs on those CPUs only
        (``taskset``, so that all its threads inherit them)."""
        self.log_dir = log_dir
        self.cpus = cpus
        self.servers: list[Server] = []

    def __enter__(self) -> "Fleet":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    # -- starting ---------------------------------------------------------------

    def _pinned(self, command: list[str]) -> list[str]:
        """``command`` run on the fleet's CPUs (``taskset``), if it has any."""
        if not self.cpus:
            return command
        return ["taskset", "-c", ",".join(map(str, sorted(self.cpus))), *command]

    def _spawn(self, name: str, command: list[str], url: str, env: dict | None = None) -> Server:
        log_path = self.log_dir / f"{name}.log"
        command = self._pinned(command)
        log = open(log_path, "wb")
        try:
            process = subprocess.Popen(command, cwd=ROOT, env=env or child_env(),
                                       stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        server = Server(name, process, log_path, url)
        self.servers.append(server)
        return server

    def spawn(self, name: str, command: list[str], url: str) -> Server:
        """Any server ``command`` that answers at ``url`` (logged, stopped with the rest)."""
        return self._spawn(name, command, url)

    def expertd(self, name: str, config: Path, env: dict | None = None,
                args: tuple[str, ...] = ()) -> Server:
        """``expertd serve --config CONFIG [ARGS]`` on a free port (as a user would serve it);
        ``env`` is its whole environment (default: ``child_env()``)."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        return self._spawn(name, [EXPERTD, "serve", "--config", str(config), "--bind", endpoint,
                                  *args], endpoint, env)

    def bridge(self, endpoint: str) -> Server:
        """The Express bridge (``node express_bridge/src/server.js``) in front of ``endpoint``."""
        port = free_port()
        env = child_env(PORT=str(port), HOST="127.0.0.1", EXPERTD_ENDPOINT=endpoint)
        return self._spawn("bridge", ["node", "express_bridge/src/server.js"],
                           f"http://127.0.0.1:{port}", env)

    def bjoern(self) -> Server:
        """``bench/falcon_app.py`` served by bjoern (one process, model called inline)."""
        port = free_port()
        return self._spawn("bjoern", [PYTHON, "-m", "bench.falcon_app", "--port", str(port)],
                           f"http://127.0.0.1:{port}")

    def gunicorn(self, workers: int) -> Server:
        """The same Falcon app under gunicorn with ``workers`` gevent workers."""
        port = free_port()
        command = [PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", str(workers),
                   "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5",
                   "--timeout", "60", "--log-level", "warning", "bench.falcon_app:app"]
        return self._spawn("gunicorn", command, f"http://127.0.0.1:{port}")

    def worker(self, name: str, command: list[str]) -> Server:
        """A helper process spoken to through its stdin/stdout pipes (stderr is logged)."""
        log_path = self.log_dir / f"{name}.log"
        command = self._pinned(command)
        log = open(log_path, "wb")
        try:
            process = subprocess.Popen(command, cwd=ROOT, env=child_env(),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=log, start_new_session=True, text=True)
        finally:
            log.close()
        server = Server(name, process, log_path, "")
        self.servers.append(server)
        return server

    # -- readiness ---------------------------------------------------------------

    def wait_ready(self, servers: list[Server], timeout: float = 240.0) -> None:
        """Wait until every server answers (health RPC or ``GET /healthz``)."""
        deadline = time.monotonic() + timeout
        waiting = list(servers)
        while waiting:
            for server in list(waiting):
                if not server.alive():
                    raise StartError(f"{server.name} exited with status "
                                     f"{server.process.returncode}:\n{server.log_tail()}")
                ok = (_expertd_ready(server.url) if server.url.startswith("tcp://")
                      else _http_ready(server.url + "/healthz"))
                if ok:
                    server.ready_seconds = time.monotonic() - server.started
                    waiting.remove(server)
            if waiting:
                if time.monotonic() > deadline:
                    names = ", ".join(s.name for s in waiting)
                    raise StartError(f"not ready after {timeout:.0f} s: {names}:\n"
                                     + "\n".join(s.log_tail() for s in waiting))
                time.sleep(0.25)

    # -- stopping -----------------------------------------------------------------

    def stop(self, server: Server, timeout: float = 15.0) -> None:
        """SIGTERM the server; SIGKILL its process group if it has not exited in time."""
        if server.alive():
            try:
                server.process.send_signal(signal.SIGTERM)
                server.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(server.pid, signal.SIGKILL)  # stragglers, e.g. gunicorn workers
        except (ProcessLookupError, PermissionError):
            pass
        if server.process.poll() is None:
            server.process.wait(5)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        """Stop every server still running (SIGTERM to all first, then wait)."""
        for server in self.servers:
            if server.alive():
                try:
                    server.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for server in list(self.servers):
            self.stop(server)
