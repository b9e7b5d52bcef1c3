"""deploy/airflow/expertd_dag.py run by Airflow (``dag.test()``, no scheduler) against a real server.

Airflow lives in its own venv (.venv-airflow, exact pins in
deploy/airflow/requirements.txt; ``make test`` installs it) with expertd's light
client installed on top. The server runs vader and the learner (no TensorFlow:
the DAG's tasks only talk to it). One run answers every task (the pipe stage's
output file, the TaskFlow batch, the learner taught from labels); a second run
with a line the stage cannot answer must fail the BashOperator task and leave
no output file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess

AIRFLOW_VENV = ROOT / ".venv-airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
DAG_FILE = ROOT / "deploy" / "airflow" / "expertd_dag.py"
DOCS = [
    {"id": 1, "text": "What a wonderful day, I could not be happier"},
    {"id": 2, "text": "This is awful, sad and disappointing"},
    {"id": 3, "text": "I love this product"},
]
LABELS = [
    {"text": "I was billed twice this month", "label": "billing"},
    {"text": "The app crashes when I log in", "label": "bug"},
]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A server with vader and the learner, and an Airflow home whose database is migrated."""
    if not AIRFLOW_PYTHON.exists():
        pytest.fail("Airflow is missing: `make test` installs it into .venv-airflow "
                    "(deploy/airflow/requirements.txt)")
    tmp = tmp_path_factory.mktemp("airflow")
    config = tmp / "experts.yaml"
    config.write_text(f"server:\n  state_dir: {tmp / 'state'}\nexperts:\n"
                      "  vader:\n    expert: expertd.experts.vader:VaderExpert\n"
                      "  learner:\n    expert: expertd.experts.online:OnlineTextExpert\n")
    server = ServerProcess(config, tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
    env.update(AIRFLOW_HOME=str(tmp / "home"), AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FILE.parent),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", EXPERTD_ENDPOINT=server.endpoint,
               PATH=f"{AIRFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    migrated = subprocess.run([str(AIRFLOW_VENV / "bin" / "airflow"), "db", "migrate"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    yield env, tmp, server
    assert server.stop() == 0, server.read_log()


def run_dag(env: dict, folder: Path, lines: list[str]) -> tuple[int, dict, Path, str]:
    """``python expertd_dag.py`` (``dag.test()``) on ``lines``: status, task states, output dir, log."""
    folder.mkdir()
    (folder / "docs.jsonl").write_text("".join(line + "\n" for line in lines))
    (folder / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in LABELS))
    out = folder / "out"
    out.mkdir()
    done = subprocess.run([str(AIRFLOW_PYTHON), str(DAG_FILE), "--input", "docs.jsonl",
                           "--labels", "labels.jsonl", "--output-dir", "out"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    marks = [line for line in done.stdout.splitlines() if line.startswith("EXPERTD_DAG_RESULT ")]
    assert marks, log
    return done.returncode, json.loads(marks[-1].split(" ", 1)[1]), out, log


def test_dag_answers_the_file_the_batch_and_teaches_the_learner(airflow):
    env, tmp, server = airflow
    status, result, out, log = run_dag(env, tmp / "good", [json.dumps(doc) for doc in DOCS])
    assert status == 0 and result["run"] == "success", log
    assert result["tasks"] == {"opinions_file": "success", "batch_opinions": "success",
                               "teach_learner": "success"}, log
    answered = [json.loads(line) for line in (out / "opinions.jsonl").read_text().splitlines()]
    assert [doc["id"] for doc in answered] == [1, 2, 3]  # every line, in order
    assert [doc["opinions"]["vader"]["label"] for doc in answered] == \
        ["positive", "negative", "positive"]
    batch = [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]
    assert [doc["opinions"] for doc in batch] == [doc["opinions"] for doc in answered]
    assert "Returned value was: {'vader': {'positive': 2, 'negative': 1}}" in log
    from expertd import ExpertsClient

    with ExpertsClient(server.endpoint, timeout=10) as experts:
        learned = experts.opinion("learner", {"text": "I was billed twice again"})
    assert learned["label"] == "billing", learned


def test_a_failing_stage_fails_its_task_and_writes_no_file(airflow):
    env, tmp, _ = airflow
    lines = [json.dumps(DOCS[0]), "not json", json.dumps(DOCS[2])]
    status, result, out, log = run_dag(env, tmp / "bad", lines)
    assert status == 1 and result["run"] == "failed", log
    assert result["tasks"]["opinions_file"] == "failed", log
    assert "not valid JSON" in log  # the stage's own reason, in the task's log
    assert not (out / "opinions.jsonl").exists()


def test_kubernetes_pod_form_compiles():
    """The KubernetesPodOperator DAG is on paper here (no cluster, no cncf provider): it compiles."""
    source = (DAG_FILE.parent / "expertd_kubernetes_dag.py").read_text()
    compile(source, "expertd_kubernetes_dag.py", "exec")
    assert "expertd_kubernetes_dag" in (DAG_FILE.parent / ".airflowignore").read_text()
