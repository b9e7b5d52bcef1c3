"""Issue 22's acceptance test: your own expert in ten minutes, from outside the repository.

1. A fresh venv with the built wheel (no TensorFlow): ``expertd init proj``,
   ``expertd serve --config proj/experts.yaml`` from another directory, and
   ``echo '{"text": ...}' | expertd pipe mine`` answers.
2. The same project with ``include: [default]`` uncommented, served by the
   repository's venv (TensorFlow and the default models, read through
   ``$EXPERTD_MODELS``): ``expertd pipe mine sentiment`` answers both, and the
   project's Keras expert ``tone`` answers too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, free_port, wait_ready
from tests.e2e.test_wheel import user_venv, wheel  # noqa: F401 (fixtures: build and install the wheel)

pytestmark = pytest.mark.timeout(900)


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a user who has never run expertd (no EXPERTD_*, their own data home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERTD_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data-home")
    env.update(extra)
    return env


class Served:
    """``expertd serve --config CONFIG`` run from ``cwd`` (not the project's folder)."""

    def __init__(self, expertd: Path, config: str, cwd: Path, env: dict) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.log_path = cwd / "server.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(expertd), "serve", "--config", config, "--bind", self.endpoint],
                                        cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.endpoint, self.process, timeout=300)
        except Exception:
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.log_path.read_text()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.log.close()
        assert self.process.returncode == 0, self.log_path.read_text()


def pipe(expertd: Path, names: list[str], lines: str, endpoint: str, cwd: Path, env: dict) -> list[dict]:
    out = subprocess.run([str(expertd), "pipe", *names, "--endpoint", endpoint], input=lines, cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_init_serve_from_elsewhere_and_pipe_in_a_fresh_venv_with_the_wheel(user_venv, tmp_path):  # noqa: F811
    expertd = user_venv / "bin" / "expertd"
    env = clean_env(tmp_path)
    init = subprocess.run([str(expertd), "init", "proj"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    assert "TensorFlow is not installed here" in init.stdout  # so `tone` is written but commented out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = Served(expertd, "../proj/experts.yaml", elsewhere, env)
    try:
        (answered,) = pipe(expertd, ["mine"], '{"text": "Hello there, world!"}\n', server.endpoint,
                           tmp_path, env)
        assert answered == {"text": "Hello there, world!",
                            "opinions": {"mine": {"words": 3, "exclamations": 1}}}
    finally:
        server.stop()
    again = subprocess.run([str(expertd), "init", "proj"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip() == "expertd init: proj is not empty; give a new or empty folder " \
                                   "(nothing was written)"


@pytest.mark.skipif(not (ROOT / "models" / "sentiment" / "model.keras").exists(),
                    reason="the default models are not trained (make models)")
def test_the_project_with_the_default_experts_beside_it(tmp_path):
    expertd = BIN / "expertd"
    env = clean_env(tmp_path, EXPERTD_MODELS=str(ROOT / "models"))
    init = subprocess.run([str(expertd), "init", "proj"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    config = tmp_path / "proj" / "experts.yaml"
    text = config.read_text()
    assert "# include: [default]\n" in text and "  tone:\n" in text
    config.write_text(text.replace("# include: [default]\n", "include: [default]\n"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = Served(expertd, str(config), elsewhere, env)
    try:
        documents = (tmp_path / "proj" / "documents.jsonl").read_text()
        answered = pipe(expertd, ["mine", "sentiment", "tone"], documents, server.endpoint, tmp_path, env)
        assert [a["id"] for a in answered] == [1, 2, 3]
        for line in answered:
            assert set(line["opinions"]) == {"mine", "sentiment", "tone"}, line
        assert answered[0]["opinions"]["sentiment"]["label"] == "positive"
        assert answered[0]["opinions"]["tone"]["label"] == "positive"
        assert answered[1]["opinions"]["tone"]["label"] == "negative"
        log = server.log_path.read_text()
        assert "oneDNN" not in log and "cpu_feature_guard" not in log  # TensorFlow kept quiet
    finally:
        server.stop()


MOOD = ROOT / "docs" / "examples" / "mood"
PAGE = ROOT / "docs" / "your-own-expert.md"


def test_the_docs_page_shows_the_example_files_as_they_are():
    """Each block after ``<!-- file: PATH -->`` in docs/your-own-expert.md is that file, verbatim."""
    import re

    shown = re.findall(r"^<!-- file: (\S+) -->\n```\w+\n(.*?)^```$", PAGE.read_text(), re.M | re.S)
    assert {path for path, _ in shown} == {"docs/examples/mood/mood_script.py",
                                          "docs/examples/mood/mood_expert.py",
                                          "docs/examples/mood/experts.yaml"}
    for path, body in shown:
        assert body == (ROOT / path).read_text(), path


@pytest.mark.skipif(not (ROOT / "models" / "sentiment" / "model.keras").exists(),
                    reason="the default models are not trained (make models)")
def test_the_stdin_script_and_its_converted_expert_answer_the_same(tmp_path):
    env = clean_env(tmp_path, MOOD_MODEL=str(ROOT / "models" / "sentiment" / "model.keras"))
    documents = (MOOD / "documents.jsonl").read_text()
    script = subprocess.run([str(BIN / "python"), "mood_script.py"], input=documents, cwd=MOOD, env=env,
                            capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, script.stderr
    server = Served(BIN / "expertd", str(MOOD / "experts.yaml"), tmp_path, env)
    try:
        staged = pipe(BIN / "expertd", ["mood"], documents, server.endpoint, tmp_path, env)
    finally:
        server.stop()
    assert staged == [json.loads(line) for line in script.stdout.splitlines()]
    assert [line["opinions"]["mood"]["mood"] for line in staged] == ["up", "down", "up"]
