"""The pipe stage in a pod of the expertd image, from Airflow (KubernetesPodOperator).

On paper: this repository's tests have no cluster, so this file is checked to
compile, never run (``.airflowignore`` keeps the test's DAG folder from loading
it). Needs ``apache-airflow-providers-cncf-kubernetes`` and the manifests of
deploy/kubernetes/ applied (the ``expertd`` Service answers in the ``expertd``
namespace). The pod is light: the models stay loaded in the expertd Deployment,
so neither Airflow's workers nor this pod load TensorFlow. The files travel on
a PersistentVolumeClaim (``expertd-data``) that the DAG's other tasks share.
"""

from __future__ import annotations

import pendulum
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag
from kubernetes.client import models as k8s

IMAGE = "localhost/expertd:0.1.0"  # deploy/image/build.sh; push it where the cluster pulls from
PIPE_STAGE = (
    "set -euo pipefail; "
    "expertd pipe {{ params.experts }} < /data/{{ params.input }} > /data/{{ params.output }}.partial; "
    "mv /data/{{ params.output }}.partial /data/{{ params.output }}"
)


@dag(
    dag_id="expertd_opinions_in_a_pod",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["expertd", "kubernetes"],
    params={"input": "docs.jsonl", "output": "opinions.jsonl", "experts": "sentiment genre"},
)
def expertd_opinions_in_a_pod():
    """One pod of the expertd image runs the pipe stage against the in-cluster server."""
    KubernetesPodOperator(
        task_id="opinions_file",
        name="expertd-pipe",
        namespace="expertd",
        image=IMAGE,
        cmds=["bash", "-c"],
        arguments=[PIPE_STAGE],
        env_vars={"EXPERTD_ENDPOINT": "tcp://expertd.expertd.svc.cluster.local:4242"},
        volumes=[k8s.V1Volume(
            name="data",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name="expertd-data"))],
        volume_mounts=[k8s.V1VolumeMount(name="data", mount_path="/data")],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "100m", "memory": "64Mi"},  # the stage is a thin client
            limits={"memory": "256Mi"}),
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True),
        get_logs=True,
        on_finish_action="delete_pod",
    )


expertd_opinions_in_a_pod()
