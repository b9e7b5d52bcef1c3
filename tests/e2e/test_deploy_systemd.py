"""deploy/systemd/: each unit passes ``systemd-analyze verify``, and its ExecStart line runs.

systemd is not PID 1 here, so the units cannot be started by systemd itself.
Instead each unit is copied with its install paths moved to this checkout
(/opt/expertd/bin -> the venv, /etc/expertd and /var/lib/expertd -> a test
directory, the ports -> free ones), verified, and its ExecStart command line
is run as written, with the unit's Environment= and a real NOTIFY_SOCKET: the
server must send READY=1 only once it answers, RELOADING=1/READY=1 around
ExecReload, STOPPING=1 on its KillSignal, and exit 0 within TimeoutStopSec.
The server's ExecStart runs under ``systemd-socket-activate`` listening on
expertd.socket's ListenStream= (socket activation, as the units are shipped):
a connection made before the server runs is answered once it is ready; and
a socket handed over the same way holds the port across a restart.

Needs ``systemd-analyze`` and ``systemd-socket-activate`` (Debian's systemd;
the Makefile installs it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from expertd.retry import is_retryable
from tests.conftest import BIN, EXPERTD, ROOT, free_port, wait_for

UNITS = ROOT / "deploy" / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
#: ZMTP 3's greeting starts with this signature (a ZeroMQ peer answers it with its own).
ZMTP_SIGNATURE = b"\xff" + b"\x00" * 8 + b"\x7f"
NODE = shutil.which("node") or "/usr/bin/node"
VADER_ONLY = "experts:\n  vader:\n    expert: expertd.experts.vader:VaderExpert\n"


class Installed:
    """The units as installed on a machine whose paths are a test directory."""

    def __init__(self, tmp: Path) -> None:
        """Pick the directories and free ports the units' paths and ports move to."""
        self.etc, self.state, self.cache = tmp / "etc", tmp / "state", tmp / "cache"
        for folder in (self.etc, self.state, self.cache):
            folder.mkdir()
        self.units = tmp / "units"
        self.units.mkdir()
        self.rpc_port, self.health_port, self.http_port = free_port(), free_port(), free_port()
        self.replacements = {
            "/opt/expertd/bin/": f"{BIN}/",
            "/opt/expertd/models": str(ROOT / "models"),
            "/opt/expertd/express_bridge": str(ROOT / "express_bridge"),
            "/usr/bin/node": NODE,
            "/etc/expertd": str(self.etc),
            "/var/lib/expertd": str(self.state),
            "/var/cache/expertd": str(self.cache),
            "127.0.0.1:4242": f"127.0.0.1:{self.rpc_port}",
            "--health-port 8081": f"--health-port {self.health_port}",
            "PORT=3000": f"PORT={self.http_port}",
        }

    def install(self, name: str) -> Path:
        """``deploy/systemd/NAME`` with its paths and ports moved; the copy's path."""
        text = (UNITS / name).read_text()
        for old, new in self.replacements.items():
            text = text.replace(old, new)
        copy = self.units / name
        copy.write_text(text)
        return copy


def service_settings(unit: Path, wanted: str = "[Service]") -> dict[str, list[str]]:
    """The [Service] (or ``wanted``) section's ``Key=value`` lines (a key may repeat,
    like Environment=)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == wanted:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def unit_environment(settings: dict[str, list[str]]) -> dict[str, str]:
    """This process's environment plus the unit's Environment= lines (its optional
    EnvironmentFile=- files do not exist on a fresh machine)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "EXPERTD_ENDPOINT")}
    for line in settings.get("Environment", []):
        for assignment in shlex.split(line):
            key, _, value = assignment.partition("=")
            env[key] = value
    return env


def exec_start(settings: dict[str, list[str]], **variables: str) -> list[str]:
    """The ExecStart (or other Exec*) line as argv, ``$MAINPID``-style variables filled in."""
    line = settings["ExecStart"][0] if not variables else settings["ExecReload"][0]
    argv = shlex.split(line.lstrip("-@+!:"))
    return [variables.get(arg[1:], arg) if arg.startswith("$") else arg for arg in argv]


def seconds(settings: dict[str, list[str]], key: str) -> float:
    """A plain number of seconds setting (``TimeoutStopSec=50``)."""
    return float(settings[key][-1])


class NotifySocket:
    """The datagram socket systemd would listen on for a Type=notify service."""

    def __init__(self, path: Path) -> None:
        """Bind it at ``path``."""
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next_states(self, timeout: float, process: subprocess.Popen | None = None) -> dict[str, str]:
        """The next datagram as ``{KEY: value}`` (``{}`` at once if ``process`` exits first)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(min(1.0, max(0.01, deadline - time.monotonic())))
            try:
                message = self.sock.recv(4096).decode()
                return dict(line.split("=", 1) for line in message.splitlines())
            except TimeoutError:
                if (process is not None and process.poll() is not None) \
                        or time.monotonic() >= deadline:
                    return {}

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class FreshCallers:
    """Threads calling ``health()`` on a fresh connection each time, until the block ends."""

    def __init__(self, endpoint: str, threads: int = 2) -> None:
        """Call ``endpoint`` from ``threads`` threads."""
        self.endpoint = endpoint
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(threads)]

    def _call(self) -> None:
        from expertd.clients.wire import Connection

        while not self._stop.is_set():
            try:
                with Connection(self.endpoint, timeout=30.0) as connection:
                    assert connection.call("health")["status"] == "ok"
                self.answered += 1
            except Exception as exc:  # any failure is a lost call
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> FreshCallers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def health_now(endpoint: str) -> dict:
    """``health()`` on a fresh connection that gives up after 2 s (no waiting for a start)."""
    from expertd.clients.wire import Connection

    with Connection(endpoint, timeout=2.0) as connection:
        return connection.call("health")


def http_status(url: str) -> int:
    """The status of a GET (an HTTP error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The units installed into a test directory, with a vader-only experts file."""
    machine = Installed(tmp_path_factory.mktemp("machine"))
    (machine.etc / "experts.yaml").write_text(
        f"server:\n  state_dir: {machine.state}\n{VADER_ONLY}")
    return machine


@pytest.mark.skipif(not Path(SYSTEMD_ANALYZE).exists(),
                    reason="systemd-analyze is not installed (make test installs Debian's systemd)")
@pytest.mark.parametrize("name", ["expertd.service", "expertd-bridge.service", "expertd.socket"])
def test_unit_passes_systemd_analyze_verify(installed, name):
    for unit in [*UNITS.glob("*.service"), *UNITS.glob("*.socket")]:  # peers verified beside it
        installed.install(unit.name)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(installed.units / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def socket_activated(settings: dict[str, list[str]], env: dict[str, str],
                     listen: str) -> list[str]:
    """The ExecStart line run as systemd runs it with expertd.socket: systemd-socket-activate
    listens on ``listen`` and hands the socket over (it passes on only the ``-E`` variables)."""
    unit_env = [f"{k}={v}" for line in settings.get("Environment", []) for k, v in
                (a.partition("=")[::2] for a in shlex.split(line))]
    extra = [f"{k}={env[k]}" for k in ("NOTIFY_SOCKET", "PYTHONPATH") if k in env]
    return [SOCKET_ACTIVATE, "--listen", listen,
            *[arg for assignment in unit_env + extra for arg in ("-E", assignment)],
            *exec_start(settings)]


def connect_when_listening(address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    """A TCP connection to ``address`` once something listens there (refused until then)."""
    return wait_for(lambda: _connect(address), timeout, f"a listener on {address}")


def _connect(address: tuple[str, int]) -> socket.socket | None:
    try:
        return socket.create_connection(address, timeout=5)
    except ConnectionRefusedError:
        return None


def greets_as_zeromq(connection: socket.socket, timeout: float = 60.0) -> bool:
    """Whether a ZeroMQ socket answers ZMTP's greeting on this (already open) connection."""
    connection.settimeout(timeout)
    connection.sendall(ZMTP_SIGNATURE)
    return connection.recv(1) == b"\xff"


def stock_client_health(endpoint: str) -> subprocess.Popen:
    """A stock ``zerorpc.Client`` calling ``health()`` in its own process (its stdout: the status)."""
    code = ("import sys, zerorpc; client = zerorpc.Client(sys.argv[1], timeout=120, heartbeat=None); "
            "print(client.health()['status'])")
    return subprocess.Popen([sys.executable, "-c", code, endpoint], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not Path(SOCKET_ACTIVATE).exists(),
                    reason="systemd-socket-activate is not installed (make test installs systemd)")
def test_server_unit_execstart_notifies_ready_reload_and_stopping(installed, tmp_path):
    settings = service_settings(installed.install("expertd.service"))
    assert settings["Type"] == ["notify"]
    listen = service_settings(installed.install("expertd.socket"), "[Socket]")["ListenStream"][0]
    env = unit_environment(settings)
    endpoint = env["EXPERTD_ENDPOINT"]
    assert endpoint == f"tcp://{listen}"  # the service serves the socket unit's address
    notify = NotifySocket(tmp_path / "notify")
    env["NOTIFY_SOCKET"] = notify.path
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(socket_activated(settings, env, listen), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=tmp_path)
    early_client = None
    try:
        # The port takes connections before the server runs (systemd-socket-activate
        # starts it on the first one): neither is refused, both are answered once ready.
        host, port = listen.rsplit(":", 1)
        early = connect_when_listening((host, int(port)))
        early_client = stock_client_health(endpoint)
        # The first word it says is READY=1, and by then it answers (no polling).
        states = notify.next_states(seconds(settings, "TimeoutStartSec"), server)
        assert states.get("READY") == "1", (states, log_path.read_text())
        assert greets_as_zeromq(early), "a connection made before the server ran was not served"
        early.close()
        out, err = early_client.communicate(timeout=120)
        assert early_client.returncode == 0 and out.strip() == "ok", err
        health = health_now(endpoint)
        assert health["status"] == "ok" and health["workers"] == 2, health
        assert http_status(f"http://127.0.0.1:{installed.health_port}/health") == 200

        bridge_checked = run_bridge_unit(installed, endpoint, tmp_path)

        # ExecReload as written ($MAINPID is the supervisor): RELOADING=1, then READY=1.
        # The workers share the handed socket (one accept queue): callers opening a
        # fresh connection per call all along the reload are answered, except a
        # connection a retiring worker accepted just before closing its listener,
        # which it closes: ServerUnavailable, which the clients' retry policy asks again.
        with FreshCallers(endpoint) as callers:
            subprocess.run(exec_start(settings, MAINPID=str(server.pid)), check=True, timeout=10)
            assert notify.next_states(timeout=120).get("RELOADING") == "1"
            assert notify.next_states(timeout=120).get("READY") == "1"
        lost = [f for f in callers.failures if not f.startswith("ServerUnavailable")]
        assert callers.answered and not lost, lost[:5]
        assert is_retryable("ServerUnavailable")
        print(f"reload under socket activation: {callers.answered} calls answered, "
              f"{len(callers.failures)} connections closed by a retiring worker")
        assert health_now(endpoint)["status"] == "ok"

        # KillSignal drains within TimeoutStopSec and exits 0 (not a failure to restart).
        server.send_signal(getattr(signal, settings["KillSignal"][0]))
        assert notify.next_states(timeout=10).get("STOPPING") == "1"
        assert server.wait(timeout=seconds(settings, "TimeoutStopSec")) == 0, log_path.read_text()
    finally:
        for process in (server, early_client):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        notify.close()
    if bridge_checked is not True:
        pytest.skip(bridge_checked)


def run_bridge_unit(installed: Installed, endpoint: str, tmp: Path) -> bool | str:
    """Run the bridge unit's ExecStart against the server; True, or why it could not run."""
    if not (ROOT / "express_bridge" / "node_modules").is_dir():
        return "bridge unit not run: express_bridge/node_modules is missing (make test runs npm ci)"
    settings = service_settings(installed.install("expertd-bridge.service"))
    env = unit_environment(settings)
    assert env["EXPERTD_ENDPOINT"] == endpoint  # both units point at the same server
    log_path = tmp / "bridge.log"
    with open(log_path, "wb") as log:
        bridge = subprocess.Popen(exec_start(settings), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=settings["WorkingDirectory"][0])
    try:
        url = f"http://127.0.0.1:{installed.http_port}"
        wait_for(lambda: bridge.poll() is not None or _answers(f"{url}/healthz"), 60,
                 "the bridge to answer")
        assert bridge.poll() is None, log_path.read_text()
        request = urllib.request.Request(f"{url}/experts/vader", data=json.dumps(
            {"text": "I love it"}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.load(reply)["label"] == "positive"
        bridge.send_signal(getattr(signal, settings["KillSignal"][0]))
        assert bridge.wait(timeout=seconds(settings, "TimeoutStopSec")) == 0, log_path.read_text()
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    return True


def _answers(url: str) -> bool:
    try:
        return http_status(url) == 200
    except OSError:
        return False


def test_one_process_serve_says_ready_only_once_it_answers(tmp_path):
    """Without --workers, the server process itself notifies (READY=1 first, then STOPPING=1)."""
    config = tmp_path / "experts.yaml"
    config.write_text(f"server:\n  state_dir: {tmp_path / 'state'}\n{VADER_ONLY}")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    notify = NotifySocket(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    server = subprocess.Popen([EXPERTD, "serve", "--config", str(config), "--bind", endpoint],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert notify.next_states(timeout=180).get("READY") == "1"
        assert health_now(endpoint)["status"] == "ok"
        server.send_signal(signal.SIGTERM)
        assert notify.next_states(timeout=10).get("STOPPING") == "1"
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        notify.close()


def handed_over(listener: socket.socket, argv: list[str], log) -> subprocess.Popen:
    """Start ``argv`` with ``listener`` handed over as systemd does (descriptor 3, LISTEN_FDS=1,
    LISTEN_PID its own pid): the shim below is what systemd does between fork and exec."""
    shim = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
            "os.execv(sys.argv[2], sys.argv[2:])")
    return subprocess.Popen([sys.executable, "-c", shim, str(listener.fileno()), *argv],
                            pass_fds=(listener.fileno(),), stdout=log, stderr=subprocess.STDOUT)


def test_a_handed_over_socket_holds_the_port_across_a_restart(tmp_path):
    """systemd keeps the socket while the service restarts: a client that connects while
    no server runs waits in the accept queue and is answered by the next server."""
    config = tmp_path / "experts.yaml"
    config.write_text(f"server:\n  state_dir: {tmp_path / 'state'}\n{VADER_ONLY}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    address = listener.getsockname()
    endpoint = f"tcp://127.0.0.1:{address[1]}"
    argv = [EXPERTD, "serve", "--config", str(config), "--bind", endpoint]
    processes: list[subprocess.Popen] = []
    log_path = tmp_path / "server.log"
    try:
        with open(log_path, "ab") as log:
            processes.append(handed_over(listener, argv, log))
        wait_for(lambda: processes[0].poll() is not None or _answers_health(endpoint), 180,
                 "the server to answer")
        assert processes[0].poll() is None, log_path.read_text()
        processes[0].send_signal(signal.SIGTERM)
        assert processes[0].wait(timeout=60) == 0, log_path.read_text()

        # No server runs now: the port still takes connections (none is refused) ...
        waiting = socket.create_connection(address, timeout=5)
        meanwhile = stock_client_health(endpoint)
        processes.append(meanwhile)
        with open(log_path, "ab") as log:
            processes.append(handed_over(listener, argv, log))
        # ... and the restarted server answers them.
        assert greets_as_zeromq(waiting, timeout=180), log_path.read_text()
        waiting.close()
        out, err = meanwhile.communicate(timeout=180)
        assert meanwhile.returncode == 0 and out.strip() == "ok", (err, log_path.read_text())
        processes[-1].send_signal(signal.SIGTERM)
        assert processes[-1].wait(timeout=60) == 0, log_path.read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        listener.close()


def _answers_health(endpoint: str) -> bool:
    try:
        return health_now(endpoint)["status"] == "ok"
    except Exception:  # not answering yet (refused, or no handshake within 2 s)
        return False
