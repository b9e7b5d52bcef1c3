"""An Airflow DAG that asks a running expertd server for opinions (Airflow 3, TaskFlow).

Three ways a DAG uses expertd, each a task; the models stay loaded in the
expertd server (systemd unit, container or Kubernetes Deployment), never on
Airflow's workers, which only need the light client (``pip install expertd``:
no TensorFlow):

- ``opinions_file``: a BashOperator running the pipe stage file in, file out,
  under ``set -euo pipefail``: a line the stage cannot answer, an unknown
  expert or a server that does not answer fails the task (and no half-written
  output file is left: it is renamed into place only on success).
- ``batch_opinions``: a TaskFlow task calling ``ExpertsClient.opinions_batch``
  on the same documents; it returns a count of labels (an XCom).
- ``teach_learner``: a TaskFlow task teaching the ``learner`` expert from a
  file of labelled lines (``{"text": ..., "label": ...}``).

Run it with no scheduler (``dag.test()``), as tests/e2e/test_deploy_airflow.py
does::

    AIRFLOW_HOME=/tmp/airflow airflow db migrate
    EXPERTD_ENDPOINT=tcp://127.0.0.1:4242 python deploy/airflow/expertd_dag.py \
        --input docs.jsonl --labels labels.jsonl --output-dir out/

The same work in a pod of the expertd image (KubernetesPodOperator) is in
``expertd_kubernetes_dag.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task

#: Where the server is: an Airflow Variable or connection would do as well.
ENDPOINT = os.environ.get("EXPERTD_ENDPOINT", "tcp://127.0.0.1:4242")

PIPE_STAGE = """\
set -euo pipefail
out="{{ params.output_dir }}/opinions.jsonl"
expertd pipe {{ params.experts }} < "{{ params.input }}" > "$out.partial"
mv "$out.partial" "$out"
echo "wrote $(wc -l < "$out") lines with opinions to $out"
"""


@dag(
    dag_id="expertd_opinions",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["expertd"],
    params={
        # Absolute paths (a BashOperator runs in a temporary directory).
        "input": "/data/docs.jsonl",      # JSON Lines, one document per line
        "labels": "/data/labels.jsonl",   # JSON Lines with a "label" each, to teach the learner
        "output_dir": "/data/out",
        "experts": "vader",             # space-separated expert names
    },
)
def expertd_opinions():
    """Opinions for a file of documents, three ways; the learner taught from labels."""
    BashOperator(
        task_id="opinions_file",
        bash_command=PIPE_STAGE,
        env={"EXPERTD_ENDPOINT": ENDPOINT},
        append_env=True,  # keep PATH (where `expertd` is)
    )

    @task
    def batch_opinions(params=None) -> dict:
        """Every document through ``opinions_batch``; label counts per expert."""
        from expertd import ExpertsClient

        names = params["experts"].split()
        with open(params["input"], encoding="utf-8") as lines:
            docs = [json.loads(line) for line in lines if line.strip()]
        with ExpertsClient(ENDPOINT, timeout=60) as experts:
            answered = experts.opinions_batch(docs, names)
        failed = [doc for doc in answered if doc.get("errors")]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(docs)} documents got errors, "
                               f"the first: {failed[0]['errors']}")
        out = Path(params["output_dir"]) / "batch.jsonl"
        out.write_text("".join(json.dumps(doc) + "\n" for doc in answered), encoding="utf-8")
        return {name: dict(Counter(doc["opinions"][name].get("label") for doc in answered))
                for name in names}

    @task
    def teach_learner(params=None) -> dict:
        """Teach the ``learner`` expert every labelled line; what it knows afterwards."""
        from expertd import ExpertsClient

        with open(params["labels"], encoding="utf-8") as lines:
            examples = [json.loads(line) for line in lines if line.strip()]
        with ExpertsClient(ENDPOINT, timeout=60) as experts:
            result = experts.call("learn", "learner", examples)
        if result["refused"]:
            raise ValueError(f"the learner refused {len(result['refused'])} examples, "
                             f"the first: {result['refused'][0]}")
        return {"accepted": result["accepted"],
                "known_labels": result["state"]["known_labels"]}

    batch_opinions()
    teach_learner()


dag_object = expertd_opinions()


def main(argv: list[str] | None = None) -> int:
    """``dag.test()`` with the files given: exit 0 when the run succeeded; prints each task's state."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--experts", default="vader")
    args = parser.parse_args(argv)
    # Absolute paths: a BashOperator runs in a temporary directory of its own.
    run = dag_object.test(run_conf={"input": os.path.abspath(args.input),
                                    "labels": os.path.abspath(args.labels),
                                    "output_dir": os.path.abspath(args.output_dir),
                                    "experts": args.experts})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print("EXPERTD_DAG_RESULT " + json.dumps({"run": str(run.state), "tasks": states}))
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
