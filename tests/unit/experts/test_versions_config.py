"""``versions:`` in the experts file: numbered model folders, which to serve, and what is refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from expertd.experts.config import ConfigError, build_experts, build_version, load_config

MODULE = '''\
from pathlib import Path

from expertd.experts.base import Expert


class Labelled(Expert):
    """Answers the label written in its folder's label.txt."""

    def __init__(self, name=None, *, model_dir, **options):
        super().__init__(name, **options)
        self.model_dir = Path(model_dir)

    def predict(self, inputs):
        label = (self.model_dir / "label.txt").read_text().strip()
        return [{"label": label} for _ in inputs]
'''


def project(tmp_path: Path, versions_yaml: str, folders=(1, 2, 3)) -> Path:
    """An experts file with one expert ``labelled`` whose model folder holds ``folders``."""
    root = tmp_path / "proj"
    models = root / "models" / "labelled"
    models.mkdir(parents=True)
    for number in folders:
        (models / str(number)).mkdir()
        (models / str(number) / "label.txt").write_text(f"v{number}")
    (root / "versioned_labelled.py").write_text(MODULE)
    (root / "experts.yaml").write_text(textwrap.dedent("""\
        experts:
          labelled:
            expert: versioned_labelled:Labelled
            options: {model_dir: models/labelled}
            versions: VERSIONS
        """).replace("VERSIONS", versions_yaml))
    return root / "experts.yaml"


def served(path: Path):
    spec = load_config(path).experts[0]
    return spec, spec.served


def test_latest_serves_the_highest_numbered_folder(tmp_path):
    spec, versions = served(project(tmp_path, "latest", folders=(1, 2, 10)))
    assert list(versions.folders) == ["10"] and versions.default == "10"
    expert = build_experts(load_config(project(tmp_path / "b", "latest")))["labelled"]
    assert expert.version == "3" and expert.predict(["x"]) == [{"label": "v3"}]


def test_a_list_serves_those_and_the_highest_by_default(tmp_path):
    path = project(tmp_path, "[1, 2]")
    spec, versions = served(path)
    assert list(versions.folders) == ["1", "2"] and versions.default == "2"
    assert build_experts(load_config(path))["labelled"].predict(["x"]) == [{"label": "v2"}]
    one = build_version(spec, "1")
    assert one.version == "1" and one.predict(["x"]) == [{"label": "v1"}]


def test_labels_name_versions_and_stable_is_the_default(tmp_path):
    spec, versions = served(project(tmp_path, "{stable: 2, canary: 3}"))
    assert versions.labels == {"stable": "2", "canary": "3"}
    assert versions.default == "2" and versions.labels_of("3") == ["canary"]


@pytest.mark.parametrize("value, folders, expected", [
    ("[2, 7]", (1, 2), "version 7 has no folder"),
    ("latest", (), "holds no numbered version folders"),
    ("2", (1, 2), "must be 'latest', a list of version numbers"),
    ("[]", (1, 2), "must be 'latest', a list of version numbers"),
    ("{latest: 2}", (1, 2), "label 'latest' must be a word"),
    ("{stable: two}", (1, 2), "stable: must be a version number"),
    ("[1, 2]\n    shadow: 3", (1, 2, 3), "shadow: 3 is not served (versions: 1, 2)"),
    ("[1, 2]\n    canary: {version: 2, share: 1.5}", (1, 2), "canary.share must be a number from 0 to 1"),
    ("[1, 2]\n    canary: {share: 0.5}", (1, 2), "canary.version: which served version"),
    ("[1, 2]\n    cache: {size: 10}", (1, 2), "cache: an expert with versions: is not cached"),
    ("[1, 2]\n    canary: {version: 2, sticky: caller}", (1, 2), "canary.sticky must be 'none'"),
    ("[1, 2]\n    canary: {version: 2, sticky: \"field:\"}", (1, 2), "or 'field:NAME'"),
])
def test_what_is_refused_says_why(tmp_path, value, folders, expected):
    with pytest.raises(ConfigError) as info:
        load_config(project(tmp_path, value, folders))
    assert expected in str(info.value) and "'labelled'" in str(info.value)


def test_shadow_and_canary_name_served_versions(tmp_path):
    spec = load_config(project(tmp_path, "[1, 2, 3]\n    shadow: 3\n    canary: {version: 2, "
                                         "share: 0.25, sticky: document}")).experts[0]
    assert spec.shadow == 3
    assert (spec.canary.version, spec.canary.share, spec.canary.sticky) == (2, 0.25, "document")


def test_an_unversioned_entry_is_untouched(tmp_path):
    path = project(tmp_path, "latest")
    text = path.read_text().replace("    versions: latest\n", "")
    path.write_text(text.replace("models/labelled", "models/labelled/2"))
    spec = load_config(path).experts[0]
    assert spec.served is None and spec.versions is None
    expert = build_experts(load_config(path))["labelled"]
    assert expert.version == "0" and expert.predict(["x"]) == [{"label": "v2"}]


def test_a_versioned_expert_gets_no_cache_of_the_servers_cache_size(tmp_path):
    # Who answers moves with promote, rollback and canaries: a cache keyed by the version
    # the server started with would answer for the wrong version.
    from expertd.rpc_server.opinion_cache import build_caches

    path = project(tmp_path, "[1, 2]")
    path.write_text(path.read_text() + "server: {cache_size: 10}\n")
    file = load_config(path)
    experts = build_experts(file)
    experts["labelled"].pure = True
    assert build_caches(experts, file) == {}


def test_the_servers_cache_size_goes_to_pure_experts_that_read_a_field_and_need_no_other(tmp_path):
    # consensus is pure, but its key would be its whole input as JSON, which cost about as
    # much as computing it (bench/RESULTS-cache.md): it is cached only if its entry asks.
    from expertd.rpc_server.opinion_cache import build_caches

    path = tmp_path / "experts.yaml"
    path.write_text("server: {cache_size: 10}\nexperts:\n"
                    "  vader: expertd.experts.vader:VaderExpert\n"
                    "  sentiment: expertd.experts.vader:VaderExpert\n"
                    "  consensus:\n    expert: expertd.experts.consensus:ConsensusExpert\n"
                    "    needs: {sentiment: sentiment, vader: rules}\n"
                    "  asked:\n    expert: expertd.experts.consensus:ConsensusExpert\n"
                    "    needs: {sentiment: sentiment, vader: rules}\n    cache: {size: 5}\n")
    file = load_config(path)
    caches = build_caches(build_experts(file), file)
    assert sorted(caches) == ["asked", "sentiment", "vader"]
    assert caches["asked"].size == 5 and caches["vader"].size == 10
