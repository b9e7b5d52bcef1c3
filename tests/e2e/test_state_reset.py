"""``expertd state reset NAME`` starts a learner afresh; refused while a server learns from that state."""

from __future__ import annotations

import subprocess

from expertd import ExpertsClient
from tests.conftest import EXPERTD, ServerProcess

EXPERTS = """\
experts:
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {checkpoint_every: 1}
  shouting: expertd.experts.examples:shouting
"""
EXAMPLES = '{"text": "what a lovely day", "label": "happy"}\n{"text": "so sad and grey", "label": "sad"}\n'


def run(*args, stdin=None):
    return subprocess.run([EXPERTD, *args], input=stdin, capture_output=True, text=True, timeout=120)


def updates(endpoint: str) -> int:
    with ExpertsClient(endpoint, timeout=30) as client:
        return next(e for e in client.experts() if e["name"] == "learner")["learning"]["updates"]


def test_reset_forgets_the_log_and_the_checkpoint_and_waits_for_the_server_to_stop(tmp_path):
    config = tmp_path / "proj" / "experts.yaml"
    config.parent.mkdir()
    config.write_text(EXPERTS)
    server = ServerProcess(config, tmp_path)
    try:
        taught = run("learn", "learner", "--endpoint", server.endpoint, stdin=EXAMPLES)
        assert taught.returncode == 0, taught.stderr
        assert updates(server.endpoint) == 2
        refused = run("state", "reset", "learner", "--config", str(config))
        assert refused.returncode == 1
        assert "a running expertd server learns from" in refused.stderr and "expertd stop" in refused.stderr
    finally:
        assert server.stop() == 0, server.read_log()
    shown = run("state", "show", "--config", str(config))
    assert f"state_dir: {config.parent / 'state'}" in shown.stdout
    assert "learner: 2 examples" in shown.stdout and "learner.ckpt" in shown.stdout
    reset = run("state", "reset", "learner", "--config", str(config))
    assert reset.returncode == 0, reset.stderr
    assert "expert 'learner' starts afresh: removed 2 examples" in reset.stdout
    assert not (config.parent / "state" / "checkpoints" / "learner.ckpt").exists()
    server = ServerProcess(config, tmp_path)
    try:
        assert updates(server.endpoint) == 0  # knows nothing again
    finally:
        assert server.stop() == 0, server.read_log()


def test_reset_names_what_cannot_be_reset(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text(EXPERTS)
    out = run("state", "reset", "shouting", "--config", str(config))
    assert out.returncode == 2
    assert out.stderr.strip() == ("expertd state reset: expert 'shouting' does not learn; "
                                  "experts that learn: learner")
    out = run("state", "reset", "nobody", "--config", str(config))
    assert out.returncode == 2 and f"expert 'nobody' is not in {config}" in out.stderr
