"""The feedback log on PostgreSQL: learning experts in step across machines.

``PostgresFeedbackLog`` has the interface of ``feedback.SQLiteFeedbackLog``
(``append``, ``read_after``, ``pending``, ``targets_after``), plus the
checkpoints (``save_checkpoint``/``load_checkpoint``) and wake-ups
(``listen``), so that every server, on any machine, shares one log.

One order for everyone (the commit-order trap)
----------------------------------------------
A ``bigserial`` is drawn when a row is inserted, not when it commits: writer A
can take 10, writer B 11, B commit first, and a reader that has seen 11 never
looks back for 10. The choice here is **an ordered append**: every append runs
in one transaction that first takes a transaction-level advisory lock for its
expert (``pg_advisory_xact_lock``), then inserts and commits. The lock is
released only after the commit is visible, so the next writer of that expert
draws its numbers after the previous writer's rows are visible: a reader that
sees ``seq = n`` of an expert already sees every smaller ``seq`` of it. Appends
of one expert take turns (a few hundred per second per expert on loopback,
each one a batch of examples); different experts do not wait for each other.

Acknowledged after commit, never twice
--------------------------------------
``append`` returns only after COMMIT has returned, so a ``learn`` call is
acknowledged only for committed examples. A failure before COMMIT was sent is
retried once on a fresh connection (nothing was stored); a failure while
committing is reported (``FeedbackLogUnavailable``) although the examples may
have been stored: the only case where a caller that sends them again can store
them twice.

Unreachable database
--------------------
Every call that cannot reach PostgreSQL raises ``FeedbackLogUnavailable``
(retryable) at once: connections are made with a short ``connect_timeout`` and
``tcp_user_timeout``, and the next call reconnects. Opinions never touch the
database, so they are served from the current model meanwhile.

Wake-ups
--------
Each append sends ``NOTIFY expertd_feedback, '<expert>'`` in its transaction
(delivered at commit). ``listen`` runs a thread with its own connection that
calls back on each notification, and once more after every reconnection (in
case one was missed). The table is the truth; the notification only says
"read now", and the readers still poll slowly (``POLL_S``) in case one is lost.

Schema
------
Created and migrated by expertd itself (``expertd db upgrade URL``, and at
every server start): ``MIGRATIONS`` in order, the version in
``expertd_schema``, under an advisory lock so that servers starting together
migrate once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Sequence

import psycopg
from psycopg import conninfo

from expertd.rpc_server.errors import FeedbackLogUnavailable

log = logging.getLogger("expertd.feedback")

#: The NOTIFY channel appends wake readers on.
CHANNEL = "expertd_feedback"
#: First key of every advisory lock expertd takes (the second one tells them apart).
LOCK_SPACE = 0x65787064  # "expd"
#: Seconds between polls when notifications wake the readers (a fallback only).
POLL_S = 2.0
#: Seconds a connection attempt may take before the call fails.
CONNECT_TIMEOUT_S = 3
#: Milliseconds unacknowledged data may stay in flight before the connection is dropped.
TCP_USER_TIMEOUT_MS = 5000

#: Schema versions, in order: each one a list of statements run in one transaction.
MIGRATIONS: dict[int, list[str]] = {
    1: ["""CREATE TABLE expertd_examples (
               seq bigserial PRIMARY KEY,
               expert text NOT NULL,
               input text NOT NULL,
               target text NOT NULL,
               at timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX expertd_examples_by_expert ON expertd_examples (expert, seq)"],
    2: ["""CREATE TABLE expertd_checkpoints (
               expert text PRIMARY KEY,
               seq bigint NOT NULL,
               record bytea NOT NULL,
               at timestamptz NOT NULL DEFAULT now())"""],
}
SCHEMA_VERSION = max(MIGRATIONS)


def is_postgres_url(url: str | None) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return bool(url) and url.split("://", 1)[0] in ("postgresql", "postgres")


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    host, port, db = params.get("host", "localhost"), params.get("port", "5432"), params.get("dbname", "")
    user = params.get("user")
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


def _connect(url: str, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S,
                           tcp_user_timeout=TCP_USER_TIMEOUT_MS, application_name="expertd")


def upgrade(url: str) -> tuple[int, int]:
    """Create or migrate the schema at ``url`` to ``SCHEMA_VERSION``; return (before, after).

    Raises ``RuntimeError`` if the database holds a newer schema than this expertd knows.
    """
    with _connect(url) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
            conn.execute("CREATE TABLE IF NOT EXISTS expertd_schema (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM expertd_schema").fetchone()
            before = row[0] if row else 0
            if before > SCHEMA_VERSION:
                raise RuntimeError(f"the feedback log at {redacted(url)} has schema version "
                                   f"{before}, newer than this expertd's {SCHEMA_VERSION}: "
                                   "upgrade expertd")
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO expertd_schema VALUES (%s)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE expertd_schema SET version = %s", (SCHEMA_VERSION,))
    return before, SCHEMA_VERSION


class PostgresFeedbackLog:
    """The feedback log and the checkpoints in a PostgreSQL database (see the module docstring).

    Thread-safe: calls are serialised on one connection, made again after a failure.
    """

    poll_s = POLL_S

    def __init__(self, url: str, migrate: bool = True) -> None:
        """Connect to ``url`` and (``migrate``) create or upgrade the schema."""
        self.url = url
        self.where = redacted(url)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        if migrate:
            try:
                before, after = upgrade(url)
            except psycopg.OperationalError as exc:
                raise FeedbackLogUnavailable(
                    f"the feedback log at {self.where} is unreachable: {exc}") from None
            if before != after:
                log.info("feedback log at %s: schema upgraded from version %d to %d",
                         self.where, before, after)

    # -- the connection -----------------------------------------------------------

    def _run(self, work: Callable[[psycopg.Connection], Any], retry: bool = True) -> Any:
        """Run ``work(conn)`` in one transaction and commit it.

        A lost connection before COMMIT was sent is tried once more on a new one
        (nothing was stored); any other loss raises ``FeedbackLogUnavailable``.
        """
        with self._lock:
            for attempt in (0, 1):
                committing = False
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = _connect(self.url)
                    result = work(self._conn)
                    committing = True
                    self._conn.commit()
                    return result
                except psycopg.OperationalError as exc:
                    self._drop()
                    if attempt == 0 and retry and not committing:
                        continue
                    raise FeedbackLogUnavailable(
                        f"the feedback log at {self.where} is unreachable "
                        f"({type(exc).__name__})") from exc
                except BaseException:
                    try:
                        if self._conn is not None and not self._conn.closed:
                            self._conn.rollback()
                    except psycopg.Error:
                        self._drop()
                    raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    # -- the log ------------------------------------------------------------------

    def append(self, expert: str, examples: Sequence[tuple[Any, Any]]) -> list[int]:
        """Insert the examples in order under the expert's append lock; committed when this returns."""
        if not examples:
            return []
        rows = [(expert, json.dumps(x, ensure_ascii=False), json.dumps(y, ensure_ascii=False))
                for x, y in examples]

        def work(conn: psycopg.Connection) -> list[int]:
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_SPACE, expert))
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO expertd_examples (expert, input, target) "
                                   "VALUES (%s, %s, %s) RETURNING seq", rows, returning=True)
                seqs = []
                while True:
                    seqs.append(cursor.fetchone()[0])
                    if not cursor.nextset():
                        break
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, expert))
            return seqs

        return self._run(work)

    def read_after(self, expert: str, seq: int, limit: int = 1000) -> list[tuple[int, Any, Any]]:
        """Up to ``limit`` examples of ``expert`` after ``seq``, in order."""
        rows = self._run(lambda conn: conn.execute(
            "SELECT seq, input, target FROM expertd_examples WHERE expert = %s AND seq > %s "
            "ORDER BY seq LIMIT %s", (expert, seq, limit)).fetchall())
        return [(s, json.loads(x), json.loads(y)) for s, x, y in rows]

    def pending(self, expert: str, seq: int) -> int:
        """How many examples of ``expert`` come after ``seq``."""
        return self._run(lambda conn: conn.execute(
            "SELECT count(*) FROM expertd_examples WHERE expert = %s AND seq > %s",
            (expert, seq)).fetchone()[0])

    def targets_after(self, expert: str, seq: int) -> set[str]:
        """The distinct targets of ``expert`` after ``seq``, as the JSON text they are stored as."""
        rows = self._run(lambda conn: conn.execute(
            "SELECT DISTINCT target FROM expertd_examples WHERE expert = %s AND seq > %s",
            (expert, seq)).fetchall())
        return {target for (target,) in rows}

    def count(self, expert: str) -> int:
        """How many examples of ``expert`` the log holds."""
        return self.pending(expert, 0)

    def forget(self, expert: str) -> int:
        """Delete every example and the checkpoint of ``expert``; return how many examples there were."""
        def work(conn: psycopg.Connection) -> int:
            conn.execute("DELETE FROM expertd_checkpoints WHERE expert = %s", (expert,))
            return conn.execute("DELETE FROM expertd_examples WHERE expert = %s", (expert,)).rowcount
        return self._run(work)

    # -- checkpoints --------------------------------------------------------------

    def save_checkpoint(self, expert: str, seq: int, record: bytes) -> None:
        """Keep ``record`` as the expert's checkpoint at ``seq`` unless a later one is stored."""
        self._run(lambda conn: conn.execute(
            "INSERT INTO expertd_checkpoints (expert, seq, record) VALUES (%s, %s, %s) "
            "ON CONFLICT (expert) DO UPDATE SET seq = excluded.seq, record = excluded.record, "
            "at = now() WHERE expertd_checkpoints.seq < excluded.seq", (expert, seq, record)))

    def load_checkpoint(self, expert: str) -> bytes | None:
        """The expert's latest checkpoint record, or ``None``."""
        row = self._run(lambda conn: conn.execute(
            "SELECT record FROM expertd_checkpoints WHERE expert = %s", (expert,)).fetchone())
        return bytes(row[0]) if row else None

    # -- wake-ups -----------------------------------------------------------------

    def listen(self, on_append: Callable[[], None]) -> None:
        """Call ``on_append()`` (from a thread of its own) after appends by any server."""
        self._listener = threading.Thread(target=self._listen, args=(on_append,),
                                          name="expertd-feedback-listen", daemon=True)
        self._listener.start()

    def _listen(self, on_append: Callable[[], None]) -> None:
        backoff = 0.5
        while not self._closed.is_set():
            try:
                with _connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    on_append()  # anything appended while not listening
                    while not self._closed.is_set():
                        if any(True for _ in conn.notifies(timeout=1.0)):
                            on_append()
            except psycopg.Error as exc:
                if self._closed.is_set():
                    return
                log.warning("feedback log at %s: not listening (%s); polling every %.0f s until "
                            "it is back", self.where, type(exc).__name__, self.poll_s)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        """Stop listening and close the connection."""
        self._closed.set()
        if self._listener is not None:
            self._listener.join(3.0)
        with self._lock:
            self._drop()


def wait_until_reachable(url: str, timeout: float) -> None:
    """Wait until PostgreSQL at ``url`` accepts a connection (for tests and tools)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _connect(url).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
