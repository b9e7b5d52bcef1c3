"""Process control of expertd servers, written once.

What ``expertd stop``, ``expertd status``, ``expertd reload``, the pipe
stage's ``--autostart`` and the ``--workers`` supervisor do to server
processes:

* ``find_server``: the server answering at an endpoint, from its ``health()``
  answer: its pid and, with ``--workers``, its supervisor's pid;
* ``local_pid``: that pid, checked to be an expertd process on this machine;
* ``terminate``: SIGTERM (the server drains), wait, then SIGKILL;
* ``reload``: SIGHUP to a supervisor (``RELOAD_SIGNAL``);
* ``start_detached`` and ``AutostartLock``: ``expertd serve`` started in the
  background with its output in a log, one per endpoint at a time.

It is light (a few modules of the standard library, no dataclasses), because the pipe stage uses it for
``--autostart``; and it never speaks the RPC protocol itself: callers hand it a
``Probe``, the function that asks the server at an endpoint for ``health()``
(the clients' connection, with CURVE keys when they are set: see
``expertd.commands.probe``). So the core depends on no client, and the clients,
the commands and the server all depend on it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from expertd.endpoint import parse_endpoint

#: What stops a server (it drains its calls first) and what makes a supervisor reload.
STOP_SIGNAL = signal.SIGTERM
RELOAD_SIGNAL = signal.SIGHUP
#: Seconds to wait for a process to go after SIGKILL.
KILL_WAIT_S = 5.0

#: ``probe(endpoint, timeout)``: the server's ``health()`` answer; raises ``NoAnswer``.
Probe = Callable[[str, float], dict]


class ControlError(Exception):
    """A server cannot be controlled as asked (the message says why, for the user)."""


class NoAnswer(ControlError):
    """No expertd server answered at the endpoint (the message is the probe's reason)."""


# -- finding the server ---------------------------------------------------------------


class Server:
    """The server that answered at ``endpoint``, as its ``health()`` describes it."""

    def __init__(self, endpoint: str, health: dict) -> None:
        """What answered at ``endpoint``: its ``health()`` answer."""
        self.endpoint = endpoint
        self.health = health

    @property
    def pid(self):
        """The pid of the process that answered (a worker, with ``--workers``)."""
        return self.health.get("pid")

    @property
    def supervisor_pid(self):
        """The pid of its ``--workers`` supervisor (``None`` for a single process)."""
        return self.health.get("supervisor_pid")

    @property
    def main_pid(self):
        """The process to signal to stop it: the supervisor (whose workers it would restart), or it."""
        return self.supervisor_pid or self.pid


def find_server(endpoint: str, probe: Probe, timeout: float) -> Server:
    """Ask the server at ``endpoint`` who it is; ``NoAnswer`` if nobody answers in ``timeout``."""
    health = probe(endpoint, timeout)
    return Server(endpoint, health if isinstance(health, dict) else {})


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "*", "0.0.0.0"}


def is_local(endpoint: str) -> bool:
    """True if ``endpoint`` is served on this machine (loopback, wildcard, ipc)."""
    parsed = parse_endpoint(endpoint, binding=True)
    if parsed.transport != "tcp":  # ipc, inproc
        return True
    host = parsed.host
    if host in LOCAL_HOSTS or host.startswith("127."):
        return True
    import socket

    try:
        return host in {socket.gethostname(), socket.getfqdn()} or \
            host in {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return False


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def is_expertd(pid: int) -> bool:
    """True if local process ``pid`` runs expertd (or there is no /proc to tell)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True  # no /proc here: trust health()
    return b"expertd" in cmdline or b"rpc_server" in cmdline


def parent_pid(pid) -> int | None:
    """The parent of local process ``pid`` (``None`` if there is no such process here)."""
    try:
        for line in Path(f"/proc/{int(pid)}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, TypeError):
        return None
    return None


def local_pid(server: Server) -> int:
    """The pid that stops ``server``, checked to be an expertd process here; else ``ControlError``."""
    endpoint, pid = server.endpoint, server.main_pid
    if not isinstance(pid, int) or pid <= 1:
        raise ControlError(f"the server at {endpoint} did not report its pid")
    if not is_local(endpoint):
        raise ControlError(f"the server at {endpoint} is not on this machine; "
                           f"stop it where it runs (its pid there is {pid})")
    if not alive(pid) or not is_expertd(pid):
        raise ControlError(f"the server at {endpoint} reports pid {pid}, which is not an "
                           f"expertd process here (another machine or container?)")
    return pid


# -- stopping and reloading ------------------------------------------------------------


def wait_gone(pid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``pid`` to end; True if it did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def terminate(pids: Sequence[int], timeout: float,
              on_kill: Callable[[int], None] | None = None) -> list[int]:
    """SIGTERM every pid, give them ``timeout`` seconds together, then SIGKILL the rest.

    ``on_kill(pid)`` is told before each SIGKILL. Returns the pids that had to
    be killed; ``ControlError`` if one survives SIGKILL.
    """
    for pid in pids:
        _signal(pid, STOP_SIGNAL)
    deadline = time.monotonic() + timeout
    killed = []
    for pid in pids:
        if wait_gone(pid, max(0.0, deadline - time.monotonic())):
            continue
        if on_kill is not None:
            on_kill(pid)
        _signal(pid, signal.SIGKILL)
        killed.append(pid)
    for pid in killed:
        if not wait_gone(pid, KILL_WAIT_S):
            raise ControlError(f"pid {pid} survived SIGKILL")
    return killed


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone


def reload(server: Server) -> int:
    """Ask ``server``'s supervisor to reload (``RELOAD_SIGNAL``); its pid, or ``ControlError``."""
    endpoint, pid = server.endpoint, server.supervisor_pid
    if not pid:
        raise ControlError(
            f"the server at {endpoint} runs without --workers, so it cannot reload in "
            f"place; restart it (or serve with --workers N)")
    if parent_pid(server.pid) != pid:  # the answer came from another machine
        raise ControlError(
            f"the server at {endpoint} does not run on this machine (its worker pid "
            f"{server.pid} is not a child of pid {pid} here); run `expertd reload` "
            f"there, or send SIGHUP to its supervisor")
    try:
        os.kill(int(pid), RELOAD_SIGNAL)
    except ProcessLookupError:
        raise ControlError(f"the supervisor (pid {pid}) of {endpoint} is not "
                           f"running on this machine") from None
    except PermissionError:
        raise ControlError(f"not allowed to signal the supervisor (pid {pid}) of "
                           f"{endpoint}; run as its user") from None
    return int(pid)


# -- starting one in the background -----------------------------------------------------


def state_dir() -> str:
    """Where autostarted servers log and lock (``$XDG_STATE_HOME/expertd``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "expertd")


class AutostartLock:
    """The lock of one endpoint's autostart (``fcntl.flock`` on a file in ``state_dir``):
    of the processes that find no server at once, the one holding it starts one."""

    def __init__(self, endpoint: str) -> None:
        """The lock of ``endpoint`` (not taken yet)."""
        safe = re.sub(r"[^A-Za-z0-9.]+", "_", endpoint).strip("_")
        self.path = os.path.join(state_dir(), f"autostart-{safe}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this process holds it."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take it without waiting; True if we hold it (now or already)."""
        import fcntl

        if self._fd is not None:
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Let it go (closing the descriptor releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Started:
    """A server started in the background, and where its log begins."""

    def __init__(self, process, log_path: str, log_offset: int) -> None:
        """``process`` (a ``subprocess.Popen``) logs to ``log_path`` from ``log_offset`` on."""
        self.process = process
        self.log_path = log_path
        self.log_offset = log_offset

    @property
    def command(self) -> list[str]:
        """Its command line."""
        return list(self.process.args)

    def exit_status(self) -> int | None:
        """Its exit status once it has exited, else ``None``."""
        return self.process.poll()

    def log_tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines it logged (none if the log cannot be read)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                return log.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return []


def serve_command(endpoint: str, config: str | None = None) -> list[str]:
    """The ``expertd serve`` command line of this installation for ``endpoint``."""
    command = [os.path.join(os.path.dirname(sys.executable), "expertd"), "serve", "--bind", endpoint]
    if config:
        command += ["--config", config]
    return command


def start_detached(command: list[str], log_path: str) -> Started:
    """Start ``command`` in its own session, its output appended to ``log_path``."""
    import subprocess

    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        offset = log.tell()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True, close_fds=True)
    return Started(process, log_path, offset)
