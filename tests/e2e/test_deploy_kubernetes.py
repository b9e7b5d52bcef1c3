"""deploy/kubernetes/: valid against the Kubernetes API schemas (offline), and meaning what they say.

kubernetes-validate (its own venv, .venv-deploy, exact pins in
deploy/requirements.txt; ``make test`` installs it) checks every manifest
against the bundled schemas of Kubernetes 1.37, strictly (an unknown field
fails). No cluster exists here, so nothing is applied; instead the server
Deployment's arguments and the ConfigMap's experts file are handed to a real
``expertd serve --check``, the probes are checked to hit the health port that
those arguments open, and the resource requests are checked against the
committed benchmark reports they were sized from.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from tests.conftest import EXPERTD, ROOT, free_port

MANIFESTS = ROOT / "deploy" / "kubernetes"
TOOLS = ROOT / ".venv-deploy" / "bin"


def documents() -> dict[tuple[str, str], dict]:
    """Every manifest, by ``(kind, name)``."""
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def mebibytes(quantity: str) -> float:
    """``768Mi`` / ``1Gi`` in MiB."""
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_manifests_pass_kubernetes_validate_strict():
    validate = TOOLS / "kubernetes-validate"
    if not validate.exists():
        pytest.fail("kubernetes-validate is missing: `make test` installs it into .venv-deploy "
                    "(deploy/requirements.txt)")
    files = sorted(str(p) for p in MANIFESTS.glob("*.yaml"))
    done = subprocess.run([str(validate), "--strict", "--kubernetes-version", "1.37.0", *files],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == sum(1 for _ in documents())


def test_every_object_is_in_the_namespace_and_selectors_match():
    docs = documents()
    for (kind, name), doc in docs.items():
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == "expertd", (kind, name)
    for name in ("expertd", "expertd-bridge"):
        deployment = docs[("Deployment", name)]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert docs[("Service", name)]["spec"]["selector"].items() <= labels.items()
    pdb = docs[("PodDisruptionBudget", "expertd")]
    server_labels = docs[("Deployment", "expertd")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= server_labels.items()
    bridge_labels = docs[("Deployment", "expertd-bridge")]["spec"]["template"]["metadata"]["labels"]
    assert bridge_labels.get("expertd-client") == "true"  # the NetworkPolicy lets it call


def test_server_arguments_and_experts_file_pass_expertd_check(tmp_path):
    docs = documents()
    container = docs[("Deployment", "expertd")]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    (tmp_path / "experts.yaml").write_text(
        docs[("ConfigMap", "expertd-experts")]["data"]["experts.yaml"]
        .replace("/var/lib/expertd", str(tmp_path / "state")))
    # The pod's paths and port, moved here: the config mount, a free port on loopback.
    args = [str(tmp_path / "experts.yaml") if a == "/etc/expertd/experts.yaml" else a for a in args]
    args = [f"tcp://127.0.0.1:{free_port()}" if a.startswith("tcp://") else a for a in args]
    env = dict(os.environ, EXPERTD_MODELS=str(ROOT / "models"))
    done = subprocess.run([EXPERTD, *args, "--check"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 experts" in done.stdout

    health_port = args[args.index("--health-port") + 1]
    ports = {p["name"]: str(p["containerPort"]) for p in container["ports"]}
    assert ports["health"] == health_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "health"}, probe
    drain = float(args[args.index("--drain-timeout") + 1])
    grace = docs[("Deployment", "expertd")]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + 5  # the preStop pause, then the whole drain


def test_memory_requests_cover_the_measured_resident_memory():
    """Sized from bench/RESULTS.md (section 6): the request covers RSS at the end of a run."""
    report = (ROOT / "bench" / "RESULTS.md").read_text()
    server_end = float(re.search(r"^\| expertd serve, default experts \| [\d,]+ \| ([\d,]+) \|",
                                 report, re.M).group(1).replace(",", ""))
    bridge_peak = float(re.search(r"^\| Express bridge \(node\) \| [\d,]+ \| [\d,]+ \| ([\d,]+) \|",
                                  report, re.M).group(1).replace(",", ""))
    docs = documents()
    server = docs[("Deployment", "expertd")]["spec"]["template"]["spec"]["containers"][0]
    bridge = docs[("Deployment", "expertd-bridge")]["spec"]["template"]["spec"]["containers"][0]
    assert mebibytes(server["resources"]["requests"]["memory"]) >= server_end
    assert mebibytes(server["resources"]["limits"]["memory"]) >= 1.5 * server_end
    assert mebibytes(bridge["resources"]["limits"]["memory"]) >= bridge_peak
