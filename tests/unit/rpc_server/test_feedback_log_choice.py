"""Which feedback log a server opens: SQLite by default, PostgreSQL by URL (no database needed here)."""

from __future__ import annotations

import pytest

from expertd.experts.config import load_config
from expertd.rpc_server.feedback import SQLiteFeedbackLog
from expertd.rpc_server.learning import open_feedback_log


def test_no_url_is_the_sqlite_log_in_the_state_dir(tmp_path):
    log = open_feedback_log(None, tmp_path)
    try:
        assert isinstance(log, SQLiteFeedbackLog) and log.path.parent == tmp_path
    finally:
        log.close()


def test_a_url_of_another_kind_is_refused_naming_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match="postgresql://"):
        open_feedback_log("mysql://db/expertd", tmp_path)


def test_the_experts_file_takes_feedback_log(tmp_path):
    path = tmp_path / "experts.yaml"
    path.write_text("server: {feedback_log: 'postgresql://expertd@db:5432/expertd'}\n"
                    "experts: {vader: 'expertd.experts.vader:VaderExpert'}\n")
    assert load_config(path).server.feedback_log == "postgresql://expertd@db:5432/expertd"


def test_a_redacted_url_keeps_no_password():
    feedback_pg = pytest.importorskip("expertd.rpc_server.feedback_pg")
    shown = feedback_pg.redacted("postgresql://expertd:s3cret@db.internal:5433/learn")
    assert shown == "postgresql://expertd@db.internal:5433/learn"
    assert feedback_pg.is_postgres_url("postgres://x") and not feedback_pg.is_postgres_url("sqlite:x")
