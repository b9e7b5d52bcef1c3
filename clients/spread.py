"""Spreading a client's calls over connections that land on different worker processes.

``expertd serve --workers N`` shares one port between N processes, and the
kernel hands each new connection to one of them at random; every call on a
connection goes to that process. A client that wants its calls spread keeps
several connections, and ``open_elsewhere`` makes a new one again (a few
times) while it lands on a worker that another of its connections uses
(``health()`` names the process that answers, by its ``instance`` id, unique
across machines where pids are not, and ``worker`` says whether a
supervisor spreads connections at all; a lone server, or a balancer in front
of single-process servers, is taken as it comes).

This is the one rule of the Python clients: the pipe stage's ``Connector`` and
``ExpertsClient`` both open their spares through ``WorkerMap``. The HTTP
bridge's pool (express_bridge/src/pool.js) has its own: it redials while it
reaches fewer workers than ``health()``'s ``workers`` says, at most twice per
slot, and redials again later to find a restarted worker.
"""

from __future__ import annotations

from expertd.spec import health_fields

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    C = TypeVar("C")

#: The fields of ``health()`` read here (checked against the spec at import).
HEALTH_READ = health_fields("instance", "pid", "worker")

#: Times a new connection is made again when it lands on a worker already in use
#: (with 2 workers, all 16 land on the same one once in 32,768 spreads).
SPREAD_TRIES = 16

def identity(health: Any) -> tuple[Any, bool]:
    """``(process, supervised)`` from a ``health()`` answer: the process is its
    ``instance`` id (its pid from a server too old to say one)."""
    health = health if isinstance(health, dict) else {}
    return health.get("instance") or health.get("pid"), health.get("worker") is not None


def open_elsewhere(open_connection: Callable[[], C], health: Callable[[C], Any],
                   close: Callable[[C], None], taken: set) -> tuple[C, Any, bool]:
    """A new connection, its worker (``identity``), and whether it is crowded: on a worker
    already in ``taken`` although a supervisor spreads connections (when none of
    ``SPREAD_TRIES`` connections found another worker, e.g. while one restarts)."""
    for attempt in range(SPREAD_TRIES):
        connection = open_connection()
        try:
            pid, supervised = identity(health(connection))
        except BaseException:
            close(connection)
            raise
        crowded = supervised and pid in taken
        if not crowded or attempt == SPREAD_TRIES - 1:
            return connection, pid, crowded
        close(connection)
    raise AssertionError("unreachable")


class WorkerMap:
    """Which worker each of a client's connections reaches (asked once per connection),
    and the spares it opens on the others (``open_elsewhere``)."""

    def __init__(self) -> None:
        """An empty map: nothing asked yet."""
        self._workers: dict[int, Any] = {}  # id(connection) -> its worker's instance id

    def open_spare(self, connections: list[C], open_connection: Callable[[], C],
                   health: Callable[[C], Any], close: Callable[[C], None]) -> tuple[C, bool]:
        """A new connection on a worker none of ``connections`` reaches, when it can be, and
        whether it is crowded (``open_elsewhere``); ``health`` raises as it would."""
        for connection in connections:
            if id(connection) not in self._workers:
                self._workers[id(connection)] = identity(health(connection))[0]
        spare, worker, crowded = open_elsewhere(open_connection, health, close,
                                                set(self._workers.values()))
        self._workers[id(spare)] = worker
        return spare, crowded

    def forget(self, connection: Any) -> None:
        """``connection`` is closed (its id may be reused by another object)."""
        self._workers.pop(id(connection), None)

