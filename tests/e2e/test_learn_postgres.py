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
from pathlib import Path

import pytest

from tests.conftest import BIN, EXPERTD, ROOT, free_port
from tests.e2e.pg_server import PostgresServer
from tests.e2e.test_haproxy import HAPROXY, HAProxy

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


def test_a_server_whose_database_is_unreachable_says_so_in_one_line(tmp_path):
    config = learner_config(tmp_path)
    run = run_expertd("serve", "--config", str(config), "--bind", f"tcp://127.0.0.1:{free_port()}",
                      "--feedback-log", "postgresql://postgres:s3cret@127.0.0.1:1/postgres")
    assert run.returncode == 1, run
    assert "server.feedback_log: the feedback log at postgresql://postgres@127.0.0.1:1/postgres " \
           "is unreachable" in run.stderr
    assert "Traceback" not in run.stderr and "s3cret" not in run.stderr


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


# -- the whole scenario: three servers on one log, a kill -9, a PostgreSQL restart --------

LABELS = {"cat": "purrs whiskers kitten mouse meow sofa", "dog": "barks fetch puppy leash bone walk",
          "bird": "sings feather nest wings tweet sky"}
FILLER = "the a my your this that today again very".split()
HELD_OUT = [f"{word} {filler}" for label in LABELS for word in LABELS[label].split()[:3]
            for filler in FILLER[:3]] + ["nothing in particular", ""]
#: Examples per stream (one stream into each server); batches of BATCH per learn call.
PER_STREAM, BATCH = 400, 4


def example(stream: int, i: int) -> dict:
    """A unique labelled text (its ``id`` token tells it apart in the log)."""
    label = list(LABELS)[(stream * 7 + i) % 3]
    words = LABELS[label].split()
    text = f"{words[i % 6]} {FILLER[(i + stream) % 9]} {words[(i * 5 + stream) % 6]} id{stream}x{i}"
    return {"text": text, "label": label}


def learner_config(tmp) -> "os.PathLike":
    path = tmp / "experts.yaml"
    path.write_text("""
experts:
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {checkpoint_every: 150, checkpoint_seconds: 3600}
""")
    return path


def rpc(endpoint: str, timeout: float = 5.0):
    import zerorpc

    return zerorpc.Client(endpoint, timeout=timeout, heartbeat=1)


def learning_of(endpoint: str) -> dict:
    client = rpc(endpoint)
    try:
        return client.health()["learning"]["learner"]
    finally:
        client.close()


class Stream(threading.Thread):
    """Teaches one server its examples in batches; what was acknowledged, what was not."""

    def __init__(self, index: int, server) -> None:
        super().__init__(daemon=True)
        self.index, self.server = index, server
        self.acknowledged: list[str] = []
        self.unacknowledged: list[str] = []
        self.errors: list[str] = []
        self.sent = 0
        self.paused = threading.Event()  # set when it waits at two thirds
        self.go_on = threading.Event()

    def run(self) -> None:
        client = rpc(self.server.endpoint)
        for start in range(0, PER_STREAM, BATCH):
            if start == 2 * PER_STREAM // 3 // BATCH * BATCH:
                self.paused.set()
                self.go_on.wait(120)
            batch = [example(self.index, i) for i in range(start, start + BATCH)]
            texts = [e["text"] for e in batch]
            try:
                answer = client.learn("learner", batch)
                assert answer["stored"] == BATCH, answer
                self.acknowledged += texts
            except Exception as exc:  # never sent again: the log must not hold any twice
                self.unacknowledged += texts
                self.errors.append(getattr(exc, "name", type(exc).__name__))
                client.close()
                time.sleep(0.3)
                client = rpc(self.server.endpoint)
            self.sent = start + BATCH
        client.close()


def test_three_servers_on_one_log_stay_in_step_through_a_kill_and_a_database_restart(
        postgres, tmp_path):
    from tests.conftest import ServerProcess, wait_for

    servers, health_ports = [], [free_port() for _ in range(3)]
    for n in range(3):
        (tmp_path / f"m{n}").mkdir()
        servers.append(ServerProcess(learner_config(tmp_path / f"m{n}"), tmp_path / f"m{n}",
                                     "--feedback-log", postgres.url,
                                     "--health-port", str(health_ports[n])))
    try:
        streams = [Stream(n, servers[n]) for n in range(3)]
        began = time.monotonic()
        for stream in streams:
            stream.start()
        wait_for(lambda: streams[1].sent >= PER_STREAM // 3, 120, "a third of stream 1")
        servers[1].process.kill()  # kill -9, mid-stream
        servers[1].process.wait()
        servers[1].stop()
        servers[1] = ServerProcess(servers[1].log_path.parent / "experts.yaml",
                                   servers[1].log_path.parent, "--feedback-log", postgres.url,
                                   endpoint=servers[1].endpoint)
        for stream in streams:  # every stream at two thirds, then PostgreSQL goes away a while
            assert stream.paused.wait(120)
        postgres.stop()
        for stream in streams:
            stream.go_on.set()
        time.sleep(1.0)  # learn calls meanwhile fail fast (FeedbackLogUnavailable)
        postgres.start()
        for stream in streams:
            stream.join(180)
        took = time.monotonic() - began

        with psycopg.connect(postgres.url) as conn:
            logged = [text for (text,) in conn.execute(
                "SELECT input FROM expertd_examples WHERE expert = 'learner' ORDER BY seq")]
            last = conn.execute("SELECT max(seq) FROM expertd_examples "
                                "WHERE expert = 'learner'").fetchone()[0]
        logged = [__import__("json").loads(t) for t in logged]
        acknowledged = [t for s in streams for t in s.acknowledged]
        assert len(logged) == len(set(logged)), "an example is in the log twice"
        assert set(acknowledged) <= set(logged), "an acknowledged example is missing from the log"
        assert len(acknowledged) >= PER_STREAM, [s.errors for s in streams]
        assert all("FeedbackLogUnavailable" in s.errors for s in streams), [s.errors for s in streams]
        assert set(e for s in streams for e in s.errors) <= {
            "FeedbackLogUnavailable", "LostRemote", "TimeoutExpired", "ServerUnavailable"}

        # every server reaches the last example and holds the same model
        states = [wait_for(lambda s=s: (lambda st: st if st["model_version"] == last else None)(
            learning_of(s.endpoint)), 120, f"{s.endpoint} to apply the whole log") for s in servers]
        clients = [rpc(s.endpoint) for s in servers]
        learning = [next(e for e in c.experts() if e["name"] == "learner")["learning"]
                    for c in clients]
        for state in learning:  # applied once each: as many updates as the log holds
            assert state["updates"] == len(logged), (state, len(logged))
        opinions = [[c.opinion("learner", {"text": t}) for t in HELD_OUT] for c in clients]
        assert opinions[0] == opinions[1] == opinions[2]
        assert {o["label"] for o in opinions[0]} >= {"cat", "dog", "bird"}
        for c in clients:
            c.close()
        if Path(HAPROXY).exists():  # deploy/haproxy.cfg in front of two of them: one model behind it
            proxy = HAProxy(tmp_path, [(servers[n].endpoint, health_ports[n]) for n in (0, 2)])
            try:
                for _ in range(4):  # fresh connections, spread over both
                    client = rpc(proxy.endpoint)
                    assert [client.opinion("learner", {"text": t}) for t in HELD_OUT] == opinions[0]
                    client.close()
            finally:
                proxy.stop()
        print(f"\n{len(acknowledged)} acknowledged of {3 * PER_STREAM} sent in {took:.1f} s; "
              f"errors: {[s.errors for s in streams]}; states {states}")

        # a fourth machine starts from the latest checkpoint and replays only what follows
        (tmp_path / "m3").mkdir()
        fourth = ServerProcess(learner_config(tmp_path / "m3"), tmp_path / "m3",
                               "--feedback-log", postgres.url)
        servers.append(fourth)
        first = learning_of(fourth.endpoint)
        assert 0 < first["replay_total"] < len(logged), first  # from a checkpoint, not from zero
        assert "restored: checkpoint at seq" in fourth.read_log()
        wait_for(lambda: learning_of(fourth.endpoint)["model_version"] == last, 120,
                 "the fourth server to catch up")
        client = rpc(fourth.endpoint)
        assert [client.opinion("learner", {"text": t}) for t in HELD_OUT] == opinions[0]
        client.close()
    finally:
        for server in servers:
            server.stop()
