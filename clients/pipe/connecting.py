"""Connecting: the stage's connections to the server, made again when lost, and ``--autostart``.

A JSON Lines stream spreads its requests over up to ``--connections``
connections (``spare``). The first is made at start, as for one document; the
others only once a request is already in flight on each open one, so a small
run costs what it did with one connection. Since a supervised server's kernel
spreads connections (not requests) over its workers, a new connection that
lands on a worker another connection already uses is made again, a few times,
until it lands on another worker (``clients.spread``). One that found none (a
worker was restarting) is used for a second, then gets no new request and is
closed once its requests are answered, so the next one can land on the
restarted worker.

With ``--autostart``, a stage that finds no server starts ``expertd serve``
in the background (its output goes to a log file), and watches it: if that
server exits before it answers, the stage shows the tail of its log at once
and stops with exit 3. Stages that autostart at the same time take a lock
beside the log (``fcntl.flock``), so one of them starts a server and the
others wait for it. Starting, locking and logging are ``expertd.control``'s.
"""

from __future__ import annotations

import os
import select
import time

from expertd.spec import ERROR, METHOD, exit_code
from expertd.clients.pipe.options import PipeOptions
from expertd.clients.pipe.retrying import Backoff, Stop
from expertd.clients.calls import WaitInterrupted
from expertd.clients.wire import CallTimeout, Connection, RemoteError, ServerUnavailable, connect

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:  # control is imported when --autostart needs it: a stage without it does not pay for it
    from typing import Callable

    from expertd import control

#: Lines of a failed server's log shown when it exits during ``--autostart``.
LOG_TAIL_LINES = 20
#: Seconds a stage waits for a spare connection (its handshake and ``health()``).
SPARE_TIMEOUT = 2.0
#: Seconds before a spare that could not be made is tried again.
SPARE_RETRY_AFTER = 1.0


class Connector:
    """Hands out the stage's connections, connecting (and autostarting) when there is none."""

    def __init__(self, options: PipeOptions, warn: Callable[[str], None]) -> None:
        """Connect as ``options`` say; tell the user what happens through ``warn``."""
        self.options = options
        self.warn = warn
        #: The open connections; the first is the one ``get`` hands out.
        self.connections: list[Connection] = []
        self._workers = None  # spread.WorkerMap, the worker each spare reaches (made with the first)
        self._crowded: dict[int, float] = {}     # id(connection) -> when it landed crowded
        self._no_spare_until = 0.0
        self.server: control.Started | None = None  # a server this stage started
        self._lock: control.AutostartLock | None = None
        #: Given to each connection: a signal ends its waits for replies (``WaitInterrupted``).
        self.stop_waiting: Callable[[], bool] | None = None
        self.wake_fd: int | None = None

    @property
    def connection(self) -> Connection | None:
        """The first open connection (``None`` when there is none)."""
        return self.connections[0] if self.connections else None

    def alive(self, connection: Connection | None) -> bool:
        """True if ``connection`` is one of the open connections (not dropped)."""
        return any(connection is c for c in self.connections)

    def get(self, backoff: Backoff | None = None) -> Connection:
        """The connection; made within ``backoff`` (or ``--timeout``), or ``Stop`` (exit 3)."""
        if self.connections:
            return self.connections[0]
        opts = self.options
        backoff = backoff or self.backoff(opts.timeout)
        last_error: Exception | None = None
        try:
            while True:
                try:
                    # The handshake is bounded by the time left, so a port that
                    # accepts and never speaks ZMTP cannot hold us past --timeout.
                    connection = connect(opts.endpoint,
                                         timeout=max(0.05, min(opts.call_timeout,
                                                               backoff.remaining())))
                    connection.timeout = opts.call_timeout
                    if self.server is not None:
                        connection.call(METHOD.health, timeout=min(5.0, opts.call_timeout))
                    self._add(connection)
                    return connection
                except (ServerUnavailable, CallTimeout) as exc:
                    last_error = exc
                if opts.autostart:
                    if self.server is None and self._autostart_lock().try_acquire():
                        if self._answers():
                            continue
                        self.start_server()
                        backoff = self.backoff(opts.autostart_timeout)
                    elif not self._autostart_lock().held and self.server is None:
                        # Another stage is starting one: wait for it, as long as it may take.
                        if backoff.deadline - backoff.started < opts.autostart_timeout:
                            backoff = self.backoff(opts.autostart_timeout)
                    self.check_server()
                if not backoff.sleep():
                    raise Stop(self.unreachable_message(last_error, backoff),
                               exit_code(ERROR.ServerUnavailable))
        finally:
            self._release_lock()

    def backoff(self, timeout: float) -> Backoff:
        """A ``Backoff`` of ``timeout`` seconds whose pauses a signal ends (``WaitInterrupted``)."""
        return Backoff(timeout, sleep=self._pause)

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, unless the stage is asked to stop first (then ``WaitInterrupted``)."""
        stopping = self.stop_waiting or (lambda: False)
        if not stopping():
            if self.wake_fd is None:
                time.sleep(seconds)
            else:
                select.select([self.wake_fd], [], [], seconds)
        if stopping():
            raise WaitInterrupted("stopped waiting for the server")

    def _answers(self) -> bool:
        """True if a server answers now (one another stage started while we waited)."""
        from expertd import control
        from expertd.clients.probe import health_probe

        try:
            control.find_server(self.options.endpoint, health_probe, 2.0)
            return True
        except control.NoAnswer:
            return False

    def spare(self, busy: dict[int, int]) -> Connection:
        """The connection for the next request: the least busy, or a new one.

        ``busy`` counts the requests in flight per connection (by ``id``). A new
        connection is made only when every open one has a request in flight and
        fewer than ``--connections`` are open; if it cannot be made, the stream
        goes on over those it has.
        """
        self.get()
        self._retire_crowded(busy)
        usable = self.connections[:1] + [c for c in self.connections[1:]
                                         if not self._retiring(c)]
        least = min(usable, key=lambda c: busy.get(id(c), 0))
        if (busy.get(id(least), 0) == 0 or len(self.connections) >= self.options.connections
                or time.monotonic() < self._no_spare_until):
            return least
        try:
            return self._open_spare()
        except (ServerUnavailable, CallTimeout, RemoteError):
            self._no_spare_until = time.monotonic() + SPARE_RETRY_AFTER
            return least

    def _retiring(self, connection: Connection) -> bool:
        """True for a crowded connection (on a worker another one uses) past its grace:
        it gets no new chunk, and goes once its chunks are answered."""
        marked = self._crowded.get(id(connection))
        return marked is not None and time.monotonic() - marked >= SPARE_RETRY_AFTER

    def _retire_crowded(self, busy: dict[int, int]) -> None:
        """Drop retiring connections with no chunk in flight: the next spare is made
        again, and lands on another worker once there is one (a restarted worker)."""
        for connection in self.connections[1:]:
            if self._retiring(connection) and not busy.get(id(connection)):
                self.drop(connection)

    def _health(self, connection: Connection):
        return connection.call(METHOD.health, timeout=min(SPARE_TIMEOUT, self.options.call_timeout))

    def _open_spare(self) -> Connection:
        """Another connection, on a worker no open connection uses when it can be."""
        def open_connection() -> Connection:
            connection = connect(self.options.endpoint,
                                 timeout=min(SPARE_TIMEOUT, self.options.call_timeout))
            connection.timeout = self.options.call_timeout
            return connection

        if self._workers is None:
            from expertd.clients.spread import WorkerMap  # a one-document stage makes no spare

            self._workers = WorkerMap()
        connection, crowded = self._workers.open_spare(self.connections, open_connection,
                                                       self._health, lambda c: c.close())
        if crowded:
            self._crowded[id(connection)] = time.monotonic()
        self._add(connection)
        return connection

    def _add(self, connection: Connection) -> None:
        connection.stop_waiting, connection.wake_fd = self.stop_waiting, self.wake_fd
        self.connections.append(connection)
        peers = tuple(self.connections)
        for c in peers:  # each keeps the others' waiting calls alive while it waits
            c.peers = peers

    def drop(self, connection: Connection | None = None) -> None:
        """Forget a connection that broke (the next ``get`` or ``spare`` makes a new one)."""
        connection = connection or self.connection
        if connection is None:
            return
        connection.close()
        if self._workers is not None:
            self._workers.forget(connection)
        self._crowded.pop(id(connection), None)
        self.connections = [c for c in self.connections if c is not connection]
        peers = tuple(self.connections)
        for c in peers:
            c.peers = peers

    def close(self) -> None:
        """Close every connection and release the autostart lock."""
        while self.connections:
            self.drop(self.connections[0])
        self._release_lock()

    def unreachable_message(self, error: Exception | None, backoff: Backoff) -> str:
        """Say which endpoint was tried, for how long, and how to start a server."""
        endpoint = self.options.endpoint
        allowed = backoff.deadline - backoff.started
        return (f"no expertd server answered at {endpoint} within {allowed:g} s "
                f"({error}). Start one with `expertd serve --bind {endpoint}` "
                f"(or `make run`), pass --autostart, or point EXPERTD_ENDPOINT at one. "
                f"Lines not yet answered were written through unchanged.")

    # -- autostart --

    @property
    def log_path(self) -> str:
        """Where a server this stage starts logs."""
        from expertd import control

        return os.path.join(control.state_dir(), "server.log")

    def _autostart_lock(self) -> control.AutostartLock:
        """The endpoint's autostart lock (made on first use)."""
        if self._lock is None:
            from expertd import control

            self._lock = control.AutostartLock(self.options.endpoint)
        return self._lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def start_server(self) -> None:
        """Start ``expertd serve`` in the background, detached from this stage."""
        from expertd import control

        command = control.serve_command(self.options.endpoint, self.options.config)
        self.server = control.start_detached(command, self.log_path)
        self.warn(f"no server at {self.options.endpoint}: started `{' '.join(command)}` "
                  f"(log: {self.log_path}); waiting for it to load its experts")

    def check_server(self) -> None:
        """If the server this stage started has exited, ``Stop`` with the tail of its log."""
        if self.server is None:
            return
        status = self.server.exit_status()
        if status is None:
            return
        tail = self.server.log_tail(LOG_TAIL_LINES)
        shown = "".join(f"\n    {line}" for line in tail) or " (nothing logged)"
        raise Stop(f"the server it started ({' '.join(self.server.command)}) exited with status "
                   f"{status} before answering; the end of its log ({self.server.log_path}):{shown}\n"
                   f"Fix what it says, then run again. Lines were written through unchanged.",
                   exit_code(ERROR.ServerUnavailable))
