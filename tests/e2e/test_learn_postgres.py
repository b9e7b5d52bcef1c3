"""Experts that learn across machines: the feedback log and checkpoints on a real PostgreSQL.

A throw-away PostgreSQL (tests/e2e/pg_server.py) and real ``expertd serve``
processes with separate state dirs, standing for separate machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.conftest import BIN, EXPERTD, ROOT
from tests.e2e.pg_server import PostgresServer

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def postgres():
    """A running throw-away PostgreSQL server for this module."""
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


def run_expertd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXPERTD, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                               **(env or {})}, cwd=ROOT)


def test_db_upgrade_creates_the_schema_once_and_names_an_unreachable_database(postgres):
    first = run_expertd("db", "upgrade", "--url", postgres.url)
    assert first.returncode == 0, first.stderr
    assert "upgraded from version 0 to 2" in first.stdout
    again = run_expertd("db", "upgrade", env={"EXPERTD_FEEDBACK_LOG": postgres.url})
    assert again.returncode == 0 and "already at version 2" in again.stdout, again
    with psycopg.connect(postgres.url) as conn:
        assert conn.execute("SELECT version FROM expertd_schema").fetchall() == [(2,)]
    down = run_expertd("db", "upgrade", "--url",
                       "postgresql://postgres:s3cret@127.0.0.1:1/postgres")
    assert down.returncode == 1
    assert "OperationalError" in down.stderr and "Traceback" not in down.stderr
    assert "s3cret" not in down.stderr + down.stdout


APPENDER = textwrap.dedent("""
    import sys
    from expertd.rpc_server.feedback_pg import PostgresFeedbackLog
    log = PostgresFeedbackLog(sys.argv[1])
    for i in range(int(sys.argv[3])):
        log.append("shared", [(f"{sys.argv[2]}-{i}-{k}", sys.argv[2]) for k in range(3)])
    log.close()
""")


def test_concurrent_writers_commit_in_sequence_order_so_a_follower_misses_nothing(postgres):
    """Four processes append at once while a follower reads after the last seq it saw:
    it must see every row (the commit-order trap would make it skip some for good)."""
    from expertd.rpc_server.feedback_pg import PostgresFeedbackLog

    reader = PostgresFeedbackLog(postgres.url)
    reader.forget("shared")
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, postgres.url, f"w{n}", "150"],
                                cwd=ROOT) for n in range(4)]
    seen, last = [], 0
    while True:
        running = any(w.poll() is None for w in writers)
        rows = reader.read_after("shared", last, 100_000)
        seen += [x for _, x, _ in rows]
        last = rows[-1][0] if rows else last
        if not running and not rows:
            break
    assert [w.returncode for w in writers] == [0] * 4
    assert len(seen) == len(set(seen)) == 4 * 150 * 3 == reader.count("shared")
    for n in range(4):  # each writer's examples in the order it appended them
        mine = [x for x in seen if x.startswith(f"w{n}-")]
        assert mine == [f"w{n}-{i}-{k}" for i in range(150) for k in range(3)]
    reader.close()


def test_notifications_wake_a_listener_and_it_resumes_after_a_restart(postgres):
    from expertd.rpc_server.feedback_pg import PostgresFeedbackLog

    log = PostgresFeedbackLog(postgres.url)
    woken = threading.Event()
    log.listen(woken.set)
    assert woken.wait(10)  # once on connecting (anything appended before)
    woken.clear()
    log.append("wake", [("a", "b")])
    assert woken.wait(10)
    postgres.restart()
    woken.clear()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the first call after a restart may find a cut connection
        try:
            log.append("wake", [("c", "d")])
            break
        except Exception:
            time.sleep(0.2)
    assert woken.wait(30)
    assert [x for _, x, _ in log.read_after("wake", 0)] == ["a", "c"]
    log.close()
