"""``expertd serve --workers N``: a light supervisor of N worker servers on one port.

The supervisor imports neither TensorFlow nor the experts. It starts N worker
processes, each a normal ``expertd serve`` (the same command line) told by
environment variables that it is worker ``i``. A worker loads its experts,
runs one prediction per expert, binds the shared port (``SO_REUSEPORT``, see
``rpc_server.transport.reuseport``) and then writes one JSON line on an inherited pipe:
the supervisor counts it as serving only from then on.

- Each worker gets its share of the cores for TensorFlow's thread pools
  (``rpc_server.model_threads``: cores / N), unless the environment already
  sets them.
- A worker that dies is restarted, with backoff (0.5 s doubling up to 30 s;
  back to 0.5 s once a worker has lived a minute), each time logged. Each
  worker place is a small state machine (``Slot``: serving, restarting,
  empty): a restart is pending only while no worker holds the place, so a
  reload's replacement that gets ready as the old worker dies cancels it.
- SIGTERM/SIGINT: every worker drains (finishes its calls), then all exit.
- SIGHUP (``control.RELOAD_SIGNAL``; ``expertd reload`` sends it): re-read the experts file and replace the
  workers one at a time: start a new one, wait until it is loaded, warm and
  listening, then retire an old one (SIGUSR2: it closes its listener once no
  call is in flight, answers ``ShuttingDown`` to new calls on its open
  connections if that takes long, and exits). A new worker that fails to start
  stops the reload; the old workers keep serving, and the log says why.

What it does to processes (stop, wait, escalate; the stop and reload signals)
is ``expertd.control``'s, shared with ``expertd stop``, ``expertd reload`` and
the pipe's ``--autostart``.

Is the reload's BPF steering (new connections go to the new worker) still
needed? Measured 2026-12-06 with ``bench.reload_steering`` (2 vader workers,
4 threads each opening a fresh connection per ``health()`` call, no retry):
without it, 5 reloads lost 10 and 11 of about 20,000 calls in two runs (the
retiring worker's listener closes with connections still in its own accept
queue, which the kernel resets: ``closed the connection``, ``no ZMTP
handshake``); with it, 0 of about 39,000 over 10 reloads. So it stays, as long
as each worker has its own ``SO_REUSEPORT`` listener. The uvicorn/gunicorn way
(the parent binds once, the workers inherit one listening socket) has no
per-worker accept queue to lose and would need no steering; not done here: how
evenly the kernel hands one shared socket's connections to its acceptors is
not measured, and the clients' worker spreading (``clients.spread``: one rule,
for the pipe stage and ``ExpertsClient`` alike) needs connections to land on
every worker.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from expertd import control
from expertd.rpc_server import sdnotify
from expertd.rpc_server.model_threads import model_threads_env

log = logging.getLogger("expertd.supervisor")

#: Environment of a worker: its index, the supervisor's pid, the fd to say "ready" on.
WORKER_INDEX_ENV = "EXPERTD_WORKER_INDEX"
SUPERVISOR_PID_ENV = "EXPERTD_SUPERVISOR_PID"
READY_FD_ENV = "EXPERTD_READY_FD"
#: Set for a worker started by a reload: its place in the port's group (it steers to itself).
STEER_INDEX_ENV = "EXPERTD_STEER_INDEX"
WORKER_COUNT_ENV = "EXPERTD_WORKER_COUNT"
#: Sent by the supervisor to a worker it replaces: stop taking connections, finish, exit.
RETIRE_SIGNAL = signal.SIGUSR2
#: A worker -> its supervisor -> every ready worker: read ``versions.json`` again
#: (``rpc_server.live_versions``: a version loaded, unloaded, promoted or rolled back live).
FANOUT_SIGNAL = signal.SIGUSR1

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0


# -- the worker's side -------------------------------------------------------------


@dataclass
class WorkerIdentity:
    """Who a worker is, as its supervisor told it."""

    index: int
    supervisor_pid: int
    ready_fd: int | None
    steer_index: int | None = None
    #: How many workers the supervisor keeps (clients spreading connections want to reach them all).
    count: int | None = None


def worker_identity() -> WorkerIdentity | None:
    """This process's worker identity, or ``None`` when it is not a supervised worker."""
    index = os.environ.get(WORKER_INDEX_ENV)
    if index is None:
        return None
    fd = os.environ.get(READY_FD_ENV)
    steer = os.environ.get(STEER_INDEX_ENV)
    count = os.environ.get(WORKER_COUNT_ENV)
    return WorkerIdentity(int(index), int(os.environ.get(SUPERVISOR_PID_ENV, "0")),
                          int(fd) if fd else None, int(steer) if steer else None,
                          int(count) if count else None)


def die_with_supervisor(identity: WorkerIdentity) -> None:
    """Ask the kernel to SIGTERM this worker when its supervisor dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if identity.supervisor_pid and os.getppid() != identity.supervisor_pid:
        os.kill(os.getpid(), signal.SIGTERM)  # it died before we asked


def report_ready(identity: WorkerIdentity, versions: dict[str, str]) -> None:
    """Tell the supervisor that this worker is loaded, warm and listening."""
    if identity.ready_fd is None:
        return
    line = json.dumps({"pid": os.getpid(), "index": identity.index, "versions": versions})
    try:
        os.write(identity.ready_fd, (line + "\n").encode())
        os.close(identity.ready_fd)
    except OSError:
        pass  # the supervisor went away; die_with_supervisor ends us


# -- the supervisor's side --------------------------------------------------------------


def wanted_workers(option: int | None, config_path: Path | None) -> int | None:
    """How many workers to supervise (``None``: serve in this process).

    ``--workers`` wins over ``workers:`` in the experts file's ``server:``
    section; a process that is itself a worker never supervises.
    """
    if worker_identity() is not None:
        return None
    if option is not None:
        return option
    import yaml

    from expertd.experts.config import DEFAULT_CONFIG

    try:  # a light read: the full check (which imports the experts) runs elsewhere
        raw = yaml.safe_load(Path(config_path or DEFAULT_CONFIG).read_text())
        workers = raw["server"]["workers"]
    except Exception:
        return None  # no setting, or a file the server itself will refuse with the reason
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        return None  # the single-process start refuses it, naming the line
    return workers


def check_experts_file(config_path: Path | None) -> str | None:
    """Check the experts file in a child process (``expertd check``): ``None``, or the problems.

    In a child, so that the supervisor never imports the experts' modules
    (which may import TensorFlow).
    """
    command = [sys.executable, "-m", "expertd.cli", "check", "--bind", "inproc://expertd-check"]
    if config_path is not None:
        command += ["--config", str(config_path)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or done.stdout.strip()).removeprefix("Error: ")


@dataclass
class Worker:
    """One worker process and what the supervisor knows about it."""

    index: int
    process: subprocess.Popen
    ready_r: int
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    info: dict = field(default_factory=dict)
    buffer: bytes = b""

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def exited(self) -> bool:
        """Whether the process has ended (reaps it)."""
        return self.process.poll() is not None

    def read_ready(self) -> bool:
        """Read what the worker wrote on its ready pipe; ``True`` once it said ready."""
        if self.ready_r < 0:
            return self.ready
        try:
            chunk = os.read(self.ready_r, 4096)
        except BlockingIOError:
            return self.ready
        if not chunk:
            self.close_pipe()
            return self.ready
        self.buffer += chunk
        if b"\n" in self.buffer:
            try:
                self.info = json.loads(self.buffer.split(b"\n", 1)[0])
            except ValueError:
                self.info = {}
            self.ready = True
            self.close_pipe()
        return self.ready

    def close_pipe(self) -> None:
        """Stop listening to the ready pipe."""
        if self.ready_r >= 0:
            os.close(self.ready_r)
            self.ready_r = -1

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the process still runs."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass

    def versions(self) -> str:
        """``name version, ...`` of the experts it reported."""
        return ", ".join(f"{n} {v}" for n, v in (self.info.get("versions") or {}).items())


class Slot:
    """One worker place: the small state machine of its restarts.

    States: ``serving`` (a worker holds it, warming or ready), ``restarting``
    (its worker died; a new one is due at ``restart_at``), ``empty`` (its worker
    died while the supervisor stops). Events, in any order: the worker exits
    (``worker_exited``), time passes (``due``), a worker takes the place (``fill``:
    the first start, a due restart, or a reload's replacement once it is ready).
    A pending restart exists only while no worker holds the place, so filling it
    cancels the restart (a replacement that got ready as the old worker died used
    to leave a restart pending forever, its wait always 0 s: a spinning loop).
    """

    def __init__(self, index: int) -> None:
        """An empty place ``index``."""
        self.index = index
        self.worker: Worker | None = None
        self.restart_at: float | None = None
        self.failures = 0

    @property
    def state(self) -> str:
        """``serving``, ``restarting`` or ``empty``."""
        if self.worker is not None:
            return "serving"
        return "restarting" if self.restart_at is not None else "empty"

    def fill(self, worker: Worker) -> Worker | None:
        """``worker`` takes the place (any pending restart is cancelled); the one it replaces."""
        old, self.worker, self.restart_at = self.worker, worker, None
        return old

    def worker_exited(self, worker: Worker, now: float, restart: bool = True) -> float | None:
        """``worker`` ended: if it held the place, schedule its restart (``restart``); the delay.

        ``None`` when nothing is scheduled: the worker no longer held the place
        (a stale event), or ``restart`` is false (the supervisor stops).
        """
        if worker is not self.worker:
            return None
        self.worker = None
        if not restart:
            self.restart_at = None
            return None
        if now - worker.started >= STABLE_AFTER_S:
            self.failures = 0
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** self.failures)
        self.failures += 1
        self.restart_at = now + delay
        return delay

    def due(self, now: float) -> bool:
        """Whether a restart is pending and its time has come."""
        return self.worker is None and self.restart_at is not None and self.restart_at <= now

    def wake_at(self) -> float | None:
        """When the supervisor must look at this place again (a pending restart), or ``None``."""
        return self.restart_at if self.worker is None else None


class Supervisor:
    """Keeps N workers serving one endpoint; restarts, reloads and drains them."""

    def __init__(self, command: list[str], count: int, config_path: Path | None,
                 drain_timeout: float = 30.0, start_timeout: float = 600.0) -> None:
        """``command`` starts one worker (the ``expertd serve`` command line)."""
        self.command = command
        self.count = count
        self.config_path = config_path
        self.drain_timeout = drain_timeout
        self.start_timeout = start_timeout
        self.slots = {index: Slot(index) for index in range(count)}
        self.candidates: list[Worker] = []  # started by a reload, not yet serving
        self.retiring: list[Worker] = []
        self.stop_reason: str | None = None
        self.reload_wanted = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- signals --

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads; each wakes the loop through a pipe."""
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(control.STOP_SIGNAL, lambda *_: self._request_stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self._request_stop("SIGINT"))
        signal.signal(control.RELOAD_SIGNAL, lambda *_: self._request_reload())
        signal.signal(FANOUT_SIGNAL, lambda *_: self._fan_out())

    def _fan_out(self) -> None:
        """Pass ``FANOUT_SIGNAL`` to every ready worker (one still starting reads the state
        when it starts serving)."""
        for worker in self.all_workers():
            if worker.ready:
                worker.signal(FANOUT_SIGNAL)

    def _request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def _request_reload(self) -> None:
        self.reload_wanted = True

    # -- workers --

    def spawn(self, index: int, steer: bool = False) -> Worker:
        """Start worker ``index``; it says ready on a pipe once it listens.

        ``steer``: the new worker takes every new connection of the port until
        the group changes (see ``rpc_server.transport.reuseport.steer_new_connections``).
        """
        ready_r, ready_w = os.pipe()
        os.set_blocking(ready_r, False)
        env = dict(os.environ)
        env.update(model_threads_env(self.count, os.environ))
        env[WORKER_INDEX_ENV] = str(index)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        env[WORKER_COUNT_ENV] = str(self.count)
        env[READY_FD_ENV] = str(ready_w)
        env.pop(STEER_INDEX_ENV, None)
        env.pop(sdnotify.NOTIFY_SOCKET_ENV, None)  # only the supervisor speaks to systemd
        if steer:  # the group numbers its sockets in listening order: it comes last
            listening = [w for w in self.all_workers() if w.ready and not w.exited()]
            env[STEER_INDEX_ENV] = str(len(listening))
        try:
            process = subprocess.Popen(self.command, env=env, pass_fds=(ready_w,))
        finally:
            os.close(ready_w)
        log.info("worker %d starting (pid %d)", index, process.pid)
        return Worker(index, process, ready_r)

    def all_workers(self) -> list[Worker]:
        """Every process this supervisor owns right now."""
        return [*self.serving(), *self.candidates, *self.retiring]

    def serving(self) -> list[Worker]:
        """The workers that hold a place (warming or ready), in place order."""
        return [slot.worker for _, slot in sorted(self.slots.items()) if slot.worker is not None]

    def tick(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a signal or a ready line; reap and restart workers."""
        fds = [self._wake_r] + [w.ready_r for w in self.all_workers() if w.ready_r >= 0]
        readable = self._select(fds, timeout)
        for worker in self.all_workers():
            if worker.ready_r in readable:
                was_ready = worker.ready
                if worker.read_ready() and not was_ready:
                    log.info("worker %d ready (pid %d) serving %s", worker.index, worker.pid,
                             worker.versions() or "its experts")
        self._reap()
        self._restart_due()

    def _select(self, fds: list[int], timeout: float) -> list[int]:
        """The readable ones of ``fds`` within ``timeout``; empties the signal wake-up pipe."""
        try:
            readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return []
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        return readable

    def _reap(self) -> None:
        for worker in list(self.retiring):
            if worker.exited():
                self.retiring.remove(worker)
                worker.close_pipe()
                log.info("old worker %d (pid %d) finished and exited (status %s)",
                         worker.index, worker.pid, worker.process.returncode)
        for index, slot in self.slots.items():
            worker = slot.worker
            if worker is None or not worker.exited():
                continue
            worker.close_pipe()
            now = time.monotonic()
            delay = slot.worker_exited(worker, now, restart=not self.stop_reason)
            if delay is not None:
                log.warning("worker %d (pid %d) exited with status %s after %.1f s; "
                            "restarting it in %.1f s", index, worker.pid,
                            worker.process.returncode, now - worker.started, delay)

    def _restart_due(self) -> None:
        if self.stop_reason:
            return
        now = time.monotonic()
        for index, slot in self.slots.items():
            if slot.due(now):
                slot.fill(self.spawn(index))

    def _next_timeout(self, limit: float) -> float:
        """How long the next tick may wait: ``limit``, or less if a restart falls due sooner."""
        wakes = [w for w in (slot.wake_at() for slot in self.slots.values()) if w is not None]
        if wakes:
            limit = min(limit, min(wakes) - time.monotonic())
        return max(0.0, min(limit, 1.0))

    # -- the phases --

    def start(self) -> bool:
        """Start every worker and wait until all are ready (``False`` if one failed)."""
        for index, slot in self.slots.items():
            slot.fill(self.spawn(index))
        deadline = time.monotonic() + self.start_timeout
        while not self.stop_reason and time.monotonic() < deadline:
            for index, worker in [(i, slot.worker) for i, slot in self.slots.items()]:
                if worker is not None and not worker.ready and worker.exited():
                    worker.read_ready()
                    if not worker.ready:
                        log.error("worker %d (pid %d) exited with status %s before it was "
                                  "ready; see its messages above", index, worker.pid,
                                  worker.process.returncode)
                        return False
            if all(w.ready for w in self.serving()):
                log.info("%d workers serving (supervisor pid %d; SIGHUP reloads)",
                         self.count, os.getpid())
                return True
            self._tick_quietly(0.5)
        if not self.stop_reason:
            log.error("workers not ready after %.0f s", self.start_timeout)
        return False

    def _tick_quietly(self, timeout: float) -> None:
        """A tick that does not restart workers (during start-up a failure is final)."""
        fds = [self._wake_r] + [w.ready_r for w in self.serving() if w.ready_r >= 0]
        readable = self._select(fds, timeout)
        for worker in self.serving():
            if worker.ready_r in readable and worker.read_ready():
                log.info("worker %d ready (pid %d) serving %s", worker.index, worker.pid,
                         worker.versions() or "its experts")

    def reload(self) -> None:
        """Replace the workers one at a time; a new worker that fails stops the reload."""
        problems = check_experts_file(self.config_path)
        if problems:
            log.error("reload refused, the old workers keep serving: %s", problems)
            return
        log.info("reload: replacing %d workers one at a time", len(self.slots))
        for index in sorted(self.slots):
            if self.stop_reason:
                return
            new = self.spawn(index, steer=True)
            self.candidates.append(new)
            deadline = time.monotonic() + self.start_timeout
            while not new.ready and not new.exited() and not self.stop_reason \
                    and time.monotonic() < deadline:
                self.tick(self._next_timeout(0.5))
            new.read_ready()
            self.candidates.remove(new)
            if not new.ready:
                new.signal(signal.SIGKILL)
                new.process.wait()
                new.close_pipe()
                if not self.stop_reason:
                    log.error("reload stopped: the new worker %d (pid %d) did not start "
                              "(status %s; its messages are above); the old workers keep "
                              "serving the previous experts", index, new.pid,
                              new.process.returncode)
                return
            old = self.slots[index].fill(new)  # a restart still pending there is cancelled
            if old is None:
                continue
            log.info("retiring worker %d (pid %d): it closes its listener once idle, "
                     "finishes its calls and exits", index, old.pid)
            old.signal(RETIRE_SIGNAL)
            self.retiring.append(old)
            deadline = time.monotonic() + self.drain_timeout + 15.0
            while old in self.retiring and not self.stop_reason \
                    and time.monotonic() < deadline:
                self.tick(self._next_timeout(0.5))
            if old in self.retiring and not self.stop_reason:
                log.warning("old worker %d (pid %d) still running; killing it", index, old.pid)
                old.signal(signal.SIGKILL)
        log.info("reload done: %s", "; ".join(
            f"worker {w.index} pid {w.pid}: {w.versions()}" for w in self.serving()))

    def stop(self) -> None:
        """Drain every worker (SIGTERM), then kill any that outlive the drain timeout."""
        workers = self.all_workers()
        log.info("%s: draining %d workers", self.stop_reason or "stop", len(workers))
        sdnotify.stopping(f"{self.stop_reason or 'stop'}: draining {len(workers)} workers")
        running = {w.pid: w for w in workers if not w.exited()}  # exited ones are reaped now

        def killing(pid: int) -> None:
            log.warning("worker %d (pid %d) did not drain in time; killing it",
                        running[pid].index, pid)

        try:
            control.terminate(list(running), self.drain_timeout + 15.0, on_kill=killing)
        except control.ControlError as exc:
            log.error("%s", exc)
        for worker in workers:
            worker.process.wait()
            worker.close_pipe()
        log.info("all workers stopped")

    def run(self) -> int:
        """Start, keep serving, reload on SIGHUP, drain on SIGTERM/SIGINT; the exit status."""
        self.install_signals()
        ok = self.start()
        if ok:
            sdnotify.ready(f"{self.count} workers serving")
            while not self.stop_reason:
                if self.reload_wanted:
                    self.reload_wanted = False
                    sdnotify.reloading("replacing the workers one at a time")
                    self.reload()
                    sdnotify.ready(f"{self.count} workers serving")
                    continue
                self.tick(self._next_timeout(1.0))
        self.stop()
        return 0 if ok or self.stop_reason else 1


def supervise(count: int, config_path: Path | None, drain_timeout: float, bind: str) -> int:
    """Run ``count`` workers with this process's own ``expertd serve`` command line."""
    from expertd.rpc_server.endpoint import check_bindable
    from expertd.rpc_server.transport.reuseport import tcp_address

    try:
        tcp_address(bind)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    problems = check_experts_file(config_path)  # refused once, before any worker starts
    if problems:
        raise click.ClickException(problems)
    check_bindable(bind)  # EndpointError: something else holds the port
    command = [sys.executable, "-m", "expertd.cli", *sys.argv[1:]]
    return Supervisor(command, count, config_path, drain_timeout).run()
