"""The experts file as a user expects it: modules beside the file, includes, the defaults by name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from expertd.experts.config import ConfigError, build_experts, load_config
from expertd.paths import PACKAGED_DEFAULTS

ROOT = Path(__file__).resolve().parents[3]


def project(tmp_path: Path, module: str, experts_yaml: str) -> Path:
    """A folder with a module ``module``.py (one plain-function expert) and an experts file."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / f"{module}.py").write_text(textwrap.dedent('''\
        def words(text):
            """How many words."""
            return {"words": len(text.split())}
        '''))
    (folder / "experts.yaml").write_text(textwrap.dedent(experts_yaml))
    return folder / "experts.yaml"


def model_dirs(tmp_path):
    """Folders where the default experts' models would be (checked for existence, not loaded here)."""
    models = tmp_path / "models"
    for name in ("sentiment", "genre"):
        (models / name).mkdir(parents=True, exist_ok=True)
    return models


def test_a_module_beside_the_experts_file_imports_from_any_current_directory(tmp_path, monkeypatch):
    path = project(tmp_path, "beside_the_file_a", """\
        experts:
          mine: beside_the_file_a:words
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    experts = build_experts(load_config(path))
    assert experts["mine"].predict(["two words"]) == [{"words": 2}]


def test_include_default_adds_the_packaged_experts_with_models_from_expertd_models(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTD_MODELS", str(model_dirs(tmp_path)))
    path = project(tmp_path, "beside_the_file_b", """\
        include: [default]
        experts:
          mine: beside_the_file_b:words
        """)
    config = load_config(path)
    names = [spec.name for spec in config.experts]
    assert names == ["sentiment", "genre", "vader", "learner", "consensus", "mine"]
    sentiment = next(spec for spec in config.experts if spec.name == "sentiment")
    assert sentiment.options["model_dir"] == str(tmp_path / "models" / "sentiment")  # from EXPERTD_MODELS
    # the learner's state lives beside the including file, not inside the package
    assert config.server.state_dir == str(path.parent / "state")


def test_an_included_path_is_read_relative_to_the_including_file(tmp_path):
    path = project(tmp_path, "beside_the_file_c", """\
        experts:
          mine: beside_the_file_c:words
        """)
    top = tmp_path / "top.yaml"
    top.write_text("include: [proj/experts.yaml]\nexperts:\n  shouting: expertd.experts.examples:shouting\n")
    config = load_config(top)
    assert [spec.name for spec in config.experts] == ["mine", "shouting"]
    assert build_experts(config)["mine"].predict(["a b c"]) == [{"words": 3}]
    assert path.exists()


def test_a_name_clash_is_refused_unless_the_entry_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("experts:\n  vader: expertd.experts.vader:VaderExpert\n")
    top = tmp_path / "top.yaml"
    top.write_text("include: [base.yaml]\nexperts:\n  vader: expertd.experts.examples:shouting\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert "expert 'vader': is also defined in the included file base.yaml" in str(info.value)
    assert "overrides: true" in str(info.value)
    top.write_text("include: [base.yaml]\nexperts:\n"
                   "  vader: {expert: expertd.experts.examples:shouting, overrides: true}\n")
    (spec,) = load_config(top).experts
    assert spec.import_string == "expertd.experts.examples:shouting"


def test_the_packaged_defaults_are_the_repositorys_default_experts():
    """expertd/defaults/experts.yaml (in the wheel) and config/experts.yaml define the same experts."""
    packaged = yaml.safe_load(PACKAGED_DEFAULTS.read_text())["experts"]
    repository = yaml.safe_load((ROOT / "config" / "experts.yaml").read_text())["experts"]
    assert list(packaged) == list(repository)

    def without_paths(entry):
        entry = dict(entry)
        entry["options"] = {k: v for k, v in entry.get("options", {}).items()
                            if not k.endswith(("_dir", "_path"))}
        return entry

    for name in packaged:
        assert without_paths(packaged[name]) == without_paths(repository[name]), name
        for key, value in repository[name].get("options", {}).items():
            if key.endswith("_dir"):  # ../models/X in the repository, $EXPERTD_MODELS/X packaged
                assert packaged[name]["options"][key] == value.replace("../models", "$EXPERTD_MODELS")


def test_tensorflow_is_silenced_for_every_expert_the_users_included(tmp_path):
    """The loader sets TF_CPP_MIN_LOG_LEVEL before importing any expert's module."""
    folder = tmp_path / "quiet"
    folder.mkdir()
    (folder / "records_env.py").write_text(
        "import os\nLEVEL = os.environ.get('TF_CPP_MIN_LOG_LEVEL')\n"
        "def level(text):\n    return {'level': LEVEL}\n")
    (folder / "experts.yaml").write_text("experts:\n  level: records_env:level\n")
    script = ("import os; os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
              "from expertd.experts.config import build_experts, load_config\n"
              f"print(build_experts(load_config({str(folder / 'experts.yaml')!r}))['level'].predict(['x']))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[{'level': '3'}]"


def test_a_file_may_hold_only_includes_and_its_own_server_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPERTD_MODELS", str(model_dirs(tmp_path)))
    top = tmp_path / "experts.yaml"
    top.write_text("include: default\nserver: {state_dir: learned}\n")
    config = load_config(top)
    assert len(config.experts) == 5
    assert config.server.state_dir == str(tmp_path / "learned")
    top.write_text("include: [default]\nexperts:\n  vader: {expert: expertd.experts.vader:VaderExpert, "
                   "overrides: yes please}\n")
    with pytest.raises(ConfigError) as info:
        load_config(top)
    assert "overrides must be true or false, got the string 'yes please'" in str(info.value)
