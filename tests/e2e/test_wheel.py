"""Installed as a user would: a wheel built from the checkout, in a fresh venv.

The wheel must install one top-level package, ``expertd`` (and its console
scripts), so that a user's own ``experts.py`` module and ``clients/`` folder
are not shadowed by ours, and ``from expertd import ExpertsClient`` works.
No TensorFlow in this venv: the user's expert is a plain function.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the checkout (no dependencies, no build isolation: offline)."""
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the sources, so that the build leaves nothing (build/, egg-info) in the checkout
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "models", "data", "state", "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True)
    (built,) = out.glob("expertd-*.whl")
    return built


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv with the wheel installed (its dependencies at the pinned versions)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"), str(wheel)],
                   check=True)
    return venv


def test_the_wheel_installs_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith((".dist-info", ".data"))} == {"expertd"}, sorted(top)
    # the commands are plain scripts (pyproject.toml's script-files), installed into bin/
    assert {n.rpartition("/")[2] for n in names if ".data/scripts/" in n} == {"expertd",
                                                                              "expertd-pipe"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["expertd"]
    # the spec (or catalogue) every side reads ships inside the package
    assert any(n.startswith("expertd/") and n.endswith(".json") for n in names), names


def test_a_users_own_experts_module_and_clients_folder_are_not_shadowed(user_venv, tmp_path):
    project = tmp_path / "project"
    (project / "clients").mkdir(parents=True)
    (project / "clients" / "__init__.py").write_text("WHO = 'the user'\n")
    (project / "experts.py").write_text(textwrap.dedent("""\
        def shouting(text):
            '''Share of upper-case letters among the letters.'''
            letters = [c for c in text if c.isalpha()]
            return {"ratio": sum(c.isupper() for c in letters) / max(len(letters), 1)}
        """))
    (project / "experts.yaml").write_text("experts:\n  shouting: experts:shouting\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    bin_dir = user_venv / "bin"
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([str(bin_dir / "expertd"), "serve", "--config", "experts.yaml",
                               "--bind", endpoint], cwd=project, stdout=log, stderr=subprocess.STDOUT)
    try:
        script = textwrap.dedent(f"""\
            import time
            from clients import WHO
            from expertd import ExpertsClient
            client = ExpertsClient({endpoint!r}, timeout=5)
            for _ in range(300):
                try:
                    client.health()
                    break
                except Exception:
                    time.sleep(0.1)
            print(WHO, client.opinion("shouting", {{"text": "HEllo"}})["ratio"])
            """)
        out = subprocess.run([str(bin_dir / "python"), "-c", script], cwd=project,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr + (tmp_path / "server.log").read_text()
        assert out.stdout.split() == ["the", "user", "0.4"]
        # the pipe stage too, from the user's project
        pipe = subprocess.run([str(bin_dir / "expertd"), "pipe", "shouting", "--endpoint", endpoint],
                              cwd=project, input='{"text": "AB cd"}\n', capture_output=True,
                              text=True, timeout=60)
        assert pipe.returncode == 0, pipe.stderr
        assert '"shouting": {"ratio": 0.5}' in pipe.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_wheel_ships_the_default_experts_file_and_the_scaffold(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "expertd/defaults/experts.yaml" in names  # include: [default]
    for name in ("experts.yaml", "my_experts.py", "examples.tsv", "documents.jsonl", "README.md"):
        assert f"expertd/scaffold/{name}" in names  # expertd init


def test_models_train_says_where_the_models_go_and_what_it_needs(user_venv, tmp_path):
    """Installed, the default experts' models go to the user's data home; without TensorFlow it says so."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERTD_")}
    env["XDG_DATA_HOME"] = str(tmp_path)
    expertd = str(user_venv / "bin" / "expertd")
    dry = subprocess.run([expertd, "models", "train", "--dry-run"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"models into {tmp_path / 'expertd' / 'models'}, training data cached "
                                 f"in {tmp_path / 'expertd' / 'data'}:")
    for module in ("expertd.experts.data", "expertd.experts.train", "expertd.experts.consensus --evaluate"):
        assert f"-m {module}" in dry.stdout
    real = subprocess.run([expertd, "models", "train"], env=env, capture_output=True, text=True, timeout=60)
    assert real.returncode == 2
    assert "not installed here; pip install 'expertd[models]' first" in real.stderr
