"""The feedback log: every labelled example a server was taught, durably, in order.

A ``learn`` call is acknowledged only once its examples are in the log; every
server that shares the log applies them in the log's order (its sequence
numbers), so all copies of an expert learn the same thing. The interface is
four methods, so that a server database can replace the embedded default:

* ``append(expert, examples) -> [seq, ...]``: store ``(input, target)`` pairs
  durably and return their sequence numbers (increasing, in order);
* ``read_after(expert, seq, limit) -> [(seq, input, target), ...]``: the
  examples after ``seq``, in order;
* ``pending(expert, seq) -> int``: how many examples there are after ``seq``
  (a learner's backlog);
* ``targets_after(expert, seq) -> {json, ...}``: the distinct targets after
  ``seq``, each as its JSON text (the labels a learner will know once it has
  applied its backlog).

A replacement must give the same guarantee as SQLite does here: once a reader
sees ``seq = n``, every example with a smaller ``seq`` is already visible (no
late gaps). SQLite serialises writers, so each append commits before the next
one takes its numbers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    expert TEXT NOT NULL,
    input TEXT NOT NULL,
    target TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_by_expert ON examples (expert, seq);
"""


class FeedbackLog(Protocol):
    """What the server needs from a feedback log."""

    def append(self, expert: str, examples: Sequence[tuple[Any, Any]]) -> list[int]:
        """Store ``(input, target)`` pairs durably; return their sequence numbers."""

    def read_after(self, expert: str, seq: int, limit: int = 1000) -> list[tuple[int, Any, Any]]:
        """Examples of ``expert`` with sequence numbers above ``seq``, in order."""

    def pending(self, expert: str, seq: int) -> int:
        """How many examples of ``expert`` have sequence numbers above ``seq``."""

    def targets_after(self, expert: str, seq: int) -> set[str]:
        """The distinct targets of ``expert`` after ``seq``, as JSON text."""

    def close(self) -> None:
        """Release the log."""


class SQLiteFeedbackLog:
    """The embedded log: one SQLite file in WAL mode, ``synchronous=FULL``.

    Several server processes may open the same file (the same ``state_dir``).
    Thread-safe: calls are serialised on one connection.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        """Open (creating if needed) the log at ``path``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout_s,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def append(self, expert: str, examples: Sequence[tuple[Any, Any]]) -> list[int]:
        """Insert the examples in one transaction; durable when this returns."""
        if not examples:
            return []
        now = time.time()
        rows = [(expert, json.dumps(x, ensure_ascii=False), json.dumps(y, ensure_ascii=False), now)
                for x, y in examples]
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                seqs = []
                for row in rows:
                    cursor.execute("INSERT INTO examples (expert, input, target, at) "
                                   "VALUES (?, ?, ?, ?)", row)
                    seqs.append(cursor.lastrowid)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return seqs

    def forget(self, expert: str) -> int:
        """Delete every example of ``expert`` (``expertd state reset``); return how many there were."""
        with self._lock:
            return self._db.execute("DELETE FROM examples WHERE expert = ?", (expert,)).rowcount

    def count(self, expert: str) -> int:
        """How many examples of ``expert`` the log holds."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM examples WHERE expert = ?",
                                    (expert,)).fetchone()[0]

    def read_after(self, expert: str, seq: int, limit: int = 1000) -> list[tuple[int, Any, Any]]:
        """Up to ``limit`` examples of ``expert`` after ``seq``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, input, target FROM examples WHERE expert = ? AND seq > ? "
                "ORDER BY seq LIMIT ?", (expert, seq, limit)).fetchall()
        return [(s, json.loads(x), json.loads(y)) for s, x, y in rows]

    def pending(self, expert: str, seq: int) -> int:
        """How many examples of ``expert`` come after ``seq`` (one index range count)."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM examples WHERE expert = ? AND seq > ?",
                                        (expert, seq)).fetchone()
        return count

    def targets_after(self, expert: str, seq: int) -> set[str]:
        """The distinct targets of ``expert`` after ``seq``, as the JSON text they are stored as."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT target FROM examples WHERE expert = ? AND seq > ?",
                                    (expert, seq)).fetchall()
        return {target for (target,) in rows}

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
