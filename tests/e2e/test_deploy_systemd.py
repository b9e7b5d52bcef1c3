"""deploy/systemd/: each unit passes ``systemd-analyze verify``, and its ExecStart line runs.

systemd is not PID 1 here, so the units cannot be started by systemd itself.
Instead each unit is copied with its install paths moved to this checkout
(/opt/expertd/bin -> the venv, /etc/expertd and /var/lib/expertd -> a test
directory, the ports -> free ones), verified, and its ExecStart command line
is run as written, with the unit's Environment= and a real NOTIFY_SOCKET: the
server must send READY=1 only once it answers, RELOADING=1/READY=1 around
ExecReload, STOPPING=1 on its KillSignal, and exit 0 within TimeoutStopSec.

Needs ``systemd-analyze`` (Debian's systemd; the Makefile installs it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN, EXPERTD, ROOT, free_port, wait_for

UNITS = ROOT / "deploy" / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
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


def service_settings(unit: Path) -> dict[str, list[str]]:
    """The [Service] section's ``Key=value`` lines (a key may repeat, like Environment=)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
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

    def next_states(self, timeout: float) -> dict[str, str]:
        """The next datagram as ``{KEY: value}``."""
        self.sock.settimeout(timeout)
        message = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in message.splitlines())

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


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
@pytest.mark.parametrize("name", ["expertd.service", "expertd-bridge.service"])
def test_unit_passes_systemd_analyze_verify(installed, name):
    for unit in UNITS.glob("*.service"):  # a unit's Wants=/After= peers are verified beside it
        installed.install(unit.name)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(installed.units / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_server_unit_execstart_notifies_ready_reload_and_stopping(installed, tmp_path):
    settings = service_settings(installed.install("expertd.service"))
    assert settings["Type"] == ["notify"]
    env = unit_environment(settings)
    endpoint = env["EXPERTD_ENDPOINT"]
    notify = NotifySocket(tmp_path / "notify")
    env["NOTIFY_SOCKET"] = notify.path
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(exec_start(settings), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        # The first word it says is READY=1, and by then it answers (no polling).
        states = notify.next_states(timeout=seconds(settings, "TimeoutStartSec"))
        assert states.get("READY") == "1", states
        health = health_now(endpoint)
        assert health["status"] == "ok" and health["workers"] == 2, health
        assert http_status(f"http://127.0.0.1:{installed.health_port}/health") == 200

        bridge_checked = run_bridge_unit(installed, endpoint, tmp_path)

        # ExecReload as written ($MAINPID is the supervisor): RELOADING=1, then READY=1.
        subprocess.run(exec_start(settings, MAINPID=str(server.pid)), check=True, timeout=10)
        assert notify.next_states(timeout=120).get("RELOADING") == "1"
        assert notify.next_states(timeout=120).get("READY") == "1"
        assert health_now(endpoint)["status"] == "ok"

        # KillSignal drains within TimeoutStopSec and exits 0 (not a failure to restart).
        server.send_signal(getattr(signal, settings["KillSignal"][0]))
        assert notify.next_states(timeout=10).get("STOPPING") == "1"
        assert server.wait(timeout=seconds(settings, "TimeoutStopSec")) == 0, log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
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
