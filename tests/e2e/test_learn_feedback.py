"""The feedback log on its own, and experts files that cannot learn (real SQLite, real processes)."""

from __future__ import annotations

import subprocess
import threading

from expertd.rpc_server.feedback import SQLiteFeedbackLog
from tests.conftest import EXPERTD, ROOT


def test_two_writers_on_one_file_share_one_order(tmp_path):
    path = tmp_path / "feedback.sqlite3"
    logs = [SQLiteFeedbackLog(path), SQLiteFeedbackLog(path)]
    seqs: dict[int, list[int]] = {0: [], 1: []}

    def write(i):
        for n in range(50):
            seqs[i] += logs[i].append("learner", [(f"w{i} {n} a", "x"), (f"w{i} {n} b", "y")])

    threads = [threading.Thread(target=write, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = logs[1].read_after("learner", 0, limit=1000)
    assert [s for s, _, _ in rows] == sorted(seqs[0] + seqs[1])
    assert len(rows) == 200
    for i in (0, 1):  # each append's examples are consecutive and in order
        for a, b in zip(seqs[i][::2], seqs[i][1::2]):
            assert b == a + 1
    assert logs[0].read_after("learner", rows[150][0]) == rows[151:]
    assert logs[0].read_after("other", 0) == []
    for log in logs:
        log.close()
    reopened = SQLiteFeedbackLog(path)
    assert reopened.read_after("learner", 0, limit=1000) == rows
    mode = reopened._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    reopened.close()


def test_the_log_counts_a_backlog_and_its_labels(tmp_path):
    log = SQLiteFeedbackLog(tmp_path / "feedback.sqlite3")
    seqs = log.append("learner", [("a", "cats"), ("b", "dogs"), ("c", "cats"), ("d", {"x": 1})])
    log.append("other", [("e", "birds")])
    assert log.pending("learner", 0) == 4 and log.pending("learner", seqs[1]) == 2
    assert log.pending("learner", seqs[-1]) == 0 and log.pending("nobody", 0) == 0
    assert log.targets_after("learner", 0) == {'"cats"', '"dogs"', '{"x": 1}'}
    assert log.targets_after("learner", seqs[1]) == {'"cats"', '{"x": 1}'}
    log.close()


def serve_fails(tmp_path, text):
    path = tmp_path / "experts.yaml"
    path.write_text(text)
    done = subprocess.run([EXPERTD, "serve", "--config", str(path), "--bind", "tcp://127.0.0.1:1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0
    return done.stderr


def test_learn_settings_on_an_expert_that_does_not_learn_are_refused(tmp_path):
    err = serve_fails(tmp_path, "experts:\n  vader:\n    expert: expertd.experts.vader:VaderExpert\n"
                                "    learn: {checkpoint_every: 10}\n")
    assert "expert 'vader': has 'learn:' settings but does not learn" in err
    assert "Traceback" not in err


def test_bad_learn_settings_are_refused(tmp_path):
    err = serve_fails(tmp_path, "experts:\n  learner:\n    expert: expertd.experts.online:OnlineTextExpert\n"
                                "    learn: {checkpoint_every: 0}\n")
    assert "learn.checkpoint_every must be an integer >= 1, got 0" in err
    err = serve_fails(tmp_path, "experts:\n  learner:\n    expert: expertd.experts.online:OnlineTextExpert\n"
                                "    learn: {every: 3}\n")
    assert "unknown key 'learn.every'" in err
    assert "Traceback" not in err
    err = serve_fails(tmp_path, "experts:\n  learner:\n    expert: expertd.experts.online:OnlineTextExpert\n"
                                "    learn: {max_labels: -1, max_examples_per_call: 1.5}\n")
    assert "learn.max_labels must be an integer >= 1, got -1" in err
    assert "learn.max_examples_per_call must be an integer >= 1, got a number 1.5" in err
    assert "Traceback" not in err
