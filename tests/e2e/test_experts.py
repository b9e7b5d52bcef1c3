"""In-process tests of the default experts (assumes `make models` has trained models/)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from expertd.experts.config import ConfigError, ExpertSpec, build_expert, import_from_string, load_config
from expertd.experts.examples import FailingExpert, SlowExpert, shouting
from expertd.experts.keras_text import (GENRE_LABELS, SENTIMENT_LABELS, GenreExpert, SentimentExpert,
                                        valence_band, valence_in_range)
from expertd.experts.train import THRESHOLDS
from expertd.experts.vader import VaderExpert

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "experts.yaml"
TEXTS = ["I love this product", "This is the worst movie ever",
         "lol omg cant wait for the weekend :)"]


@pytest.fixture(scope="module")
def default_experts():
    """The experts of config/experts.yaml, built and loaded once."""
    experts = {spec.name: build_expert(spec) for spec in load_config(CONFIG).experts}
    for expert in experts.values():
        expert.load()
    return experts


@pytest.fixture(scope="module")
def sentiment(default_experts):
    return default_experts["sentiment"]


@pytest.fixture(scope="module")
def genre(default_experts):
    return default_experts["genre"]


def test_default_config_names_four_experts(default_experts):
    assert set(default_experts) == {"sentiment", "genre", "vader", "learner", "consensus"}
    assert isinstance(default_experts["sentiment"], SentimentExpert)
    assert isinstance(default_experts["genre"], GenreExpert)
    assert isinstance(default_experts["vader"], VaderExpert)
    assert Path(default_experts["sentiment"].model_dir) == ROOT / "models" / "sentiment"


def test_sentiment_opinions_are_sensible(sentiment):
    love, worst, weekend = sentiment.predict(TEXTS)
    assert love["valence"] > 1 and love["label"] == "positive"
    assert worst["valence"] < -1 and worst["label"] == "negative"
    assert weekend["valence"] > 0
    for opinion in (love, worst, weekend):
        assert set(opinion) == {"valence", "label", "confidence"}
        assert isinstance(opinion["valence"], float) and -5 < opinion["valence"] < 5
        assert opinion["label"] in SENTIMENT_LABELS
        assert 1 / 3 <= opinion["confidence"] <= 1
        assert round(opinion["valence"], 4) == opinion["valence"]
    json.dumps([love, worst, weekend])


def test_sentiment_valence_is_held_to_the_rating_scale(sentiment):
    # The regression head alone gives 7.88 for the first text; the scale is -4..+4.
    love, hate = sentiment.predict(["I love this product. " * 8,
                                    "I hate this awful horrible disgusting product. " * 20])
    assert love["valence"] == 4.0 and -4.0 <= hate["valence"] < -1
    assert valence_in_range(7.88) == 4.0 and valence_in_range(-9.0) == -4.0
    assert valence_in_range(1.25) == 1.25 and math.isnan(valence_in_range(float("nan")))


def test_genre_opinions_are_sensible(genre):
    product, movie, tweet = genre.predict(TEXTS)
    assert (product["label"], movie["label"], tweet["label"]) == (
        "product_review", "movie_review", "tweet")
    for opinion in (product, movie, tweet):
        assert list(opinion["probabilities"]) == list(GENRE_LABELS)
        assert all(isinstance(p, float) for p in opinion["probabilities"].values())
        assert math.isclose(sum(opinion["probabilities"].values()), 1, abs_tol=1e-3)
        assert opinion["probabilities"][opinion["label"]] == max(opinion["probabilities"].values())
    json.dumps([product, movie, tweet])


@pytest.mark.parametrize("name", ["sentiment", "genre"])
def test_opinion_does_not_depend_on_batch_or_thread(default_experts, name):
    expert = default_experts[name]
    together = expert.predict(TEXTS)
    alone = [expert.predict([text])[0] for text in TEXTS]
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=expert.predict(TEXTS)))
    thread.start()
    thread.join()
    assert together == alone == result["out"]


@pytest.mark.parametrize("name", ["sentiment", "genre", "vader"])
def test_odd_inputs(default_experts, name):
    expert = default_experts[name]
    assert expert.predict([]) == []
    out = expert.predict(["", "!", "word " * 50_000, "émoji 😀 \x00 nul"])
    assert len(out) == 4
    assert all(isinstance(v, (str, float, dict)) for o in out for v in o.values())
    assert all(not (isinstance(v, float) and math.isnan(v)) for o in out for v in o.values())


@pytest.mark.parametrize("name", ["sentiment", "genre"])
def test_metrics_present_and_above_thresholds(default_experts, name):
    metrics = default_experts[name].metrics()
    key, minimum = THRESHOLDS[name]
    assert metrics[key] >= minimum
    assert metrics["n_train"] > 20_000 and metrics["n_heldout"] > 2_000
    assert "VADER" in metrics["dataset"]
    assert default_experts[name].describe()["metrics"] == metrics


def test_missing_model_tells_user_to_make_models(tmp_path):
    expert = SentimentExpert("sentiment", model_dir=str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="make models"):
        expert.load()


def test_valence_bands():
    assert [SENTIMENT_LABELS[valence_band(v)] for v in (-4, -0.51, -0.5, 0, 0.5, 0.51, 4)] == [
        "negative", "negative", "neutral", "neutral", "neutral", "positive", "positive"]


def test_vader(default_experts):
    vader = default_experts["vader"]
    assert vader.version == "3.3.2"
    good, bad, neutral = vader.predict(["I love this product", "This is the worst movie ever",
                                        "The table is brown."])
    assert good["label"] == "positive" and good["compound"] > 0.05
    assert bad["label"] == "negative" and bad["compound"] < -0.05
    assert neutral == {"compound": 0.0, "pos": 0.0, "neu": 1.0, "neg": 0.0, "label": "neutral"}
    assert math.isclose(good["pos"] + good["neu"] + good["neg"], 1, abs_tol=2e-3)


def test_example_experts():
    assert shouting("HEY there") == {"ratio": 0.375}
    assert shouting("123") == {"ratio": 0.0}
    assert SlowExpert(seconds=0).predict(["a", "b"]) == [{"slept": 0}, {"slept": 0}]
    with pytest.raises(ValueError, match="always fails"):
        FailingExpert().predict(["a"])


def test_function_expert_from_config():
    expert = build_expert(ExpertSpec("shouting", "expertd.experts.examples:shouting"))
    assert expert.description.startswith("Share of upper-case letters")
    assert expert.predict(["AB", "ab"]) == [{"ratio": 1.0}, {"ratio": 0.0}]


@pytest.mark.parametrize("import_string, message", [
    ("expertd.experts.vader", 'must be in format "<module>:<attribute>"'),
    ("expertd.experts.nosuchmodule:Thing", 'could not import module "expertd.experts.nosuchmodule"'),
    ("expertd.experts.vader:NoSuchExpert",
     'attribute "NoSuchExpert" not found in module "expertd.experts.vader"'),
])
def test_bad_import_string_is_a_config_error(import_string, message):
    with pytest.raises(ConfigError, match=message):
        import_from_string(import_string)


def test_unknown_option_is_a_config_error():
    spec = ExpertSpec("sentiment", "expertd.experts.keras_text:SentimentExpert",
                      {"model_dir": "models/sentiment", "modle_dri": "typo"})
    with pytest.raises(ConfigError, match="'sentiment'.*unknown options: modle_dri"):
        build_expert(spec)
    with pytest.raises(ConfigError, match="model_dir"):
        build_expert(ExpertSpec("sentiment", "expertd.experts.keras_text:SentimentExpert"))
    with pytest.raises(ConfigError, match="seconds must be a number"):
        build_expert(ExpertSpec("slow", "expertd.experts.examples:SlowExpert", {"seconds": "soon"}))


def test_config_file_errors(tmp_path):
    path = tmp_path / "experts.yaml"
    path.write_text("experts:\n  vader:\n    expert: expertd.experts.vader:VaderExpert\n    option: {}\n")
    with pytest.raises(ConfigError, match=r"experts.yaml:4: expert 'vader': unknown key 'option' "
                                          r"\(did you mean 'options'\?\)"):
        load_config(path)
    path.write_text("experts: {}\n")
    with pytest.raises(ConfigError, match="non-empty 'experts:'"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_package_import_stays_light():
    code = ("import sys, experts, experts.config, experts.vader, experts.examples, "
            "experts.keras_text; assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ground_truth_and_split():
    from expertd.experts.data import load_ground_truth
    from expertd.experts.train import split

    rows = load_ground_truth(ROOT / "data")
    counts = {source: sum(1 for _, _, s in rows if s == source) for source in GENRE_LABELS}
    assert counts == {"tweet": 4200, "movie_review": 10605, "product_review": 3708,
                      "news_editorial": 5190}
    assert all(-4 <= v <= 4 for _, v, _ in rows)
    train, heldout = split(rows)
    assert len(train) + len(heldout) == len(rows)
    assert not {t for t, _, _ in train} & {t for t, _, _ in heldout}
    assert split(rows) == (train, heldout)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras saving, numpy 2
def test_save_atomically_replaces_whole_dir(tmp_path):
    import keras

    from expertd.experts.train import save_atomically

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    target = tmp_path / "m"
    save_atomically(model, {"v": 1}, target)
    (target / "stale.txt").write_text("old")
    save_atomically(model, {"v": 2}, target)
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json", "model.keras"]
    assert json.loads((target / "metrics.json").read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras saving, numpy 2
def test_a_model_trained_with_another_recipe_is_trained_again(tmp_path, capsys):
    # A checkout that trained sentiment at 128 tokens per text (until 2026-12-02)
    # must not keep serving it once the recipe says 64: `make models` trains it again
    # (for real, about 15 s), and keeps a model that is current.
    from expertd.experts.train import main, out_of_date, recipe

    data = Path(__file__).resolve().parents[2] / "data"  # fetched by `make` before the tests
    if not data.is_dir():
        pytest.skip("no ground truth in data/ (make data)")
    now = recipe("sentiment")["sequence_length"]
    for name in ("sentiment", "genre"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.keras").write_bytes(b"not really a model")
        (tmp_path / name / "metrics.json").write_text(json.dumps({**recipe(name), "n_train": 1}))
    assert out_of_date(tmp_path / "sentiment", "sentiment") is None
    assert main(["--out", str(tmp_path), "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.count("already trained") == 2

    old = {**recipe("sentiment"), "sequence_length": 128}
    (tmp_path / "sentiment" / "metrics.json").write_text(json.dumps(old))
    reason = out_of_date(tmp_path / "sentiment", "sentiment")
    assert reason == f"trained with another recipe (sequence_length 128, now {now})"
    assert main(["--out", str(tmp_path), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"sentiment: training again: {reason}" in out and "genre: already trained" in out
    assert json.loads((tmp_path / "sentiment" / "metrics.json").read_text()) | recipe("sentiment") == \
        json.loads((tmp_path / "sentiment" / "metrics.json").read_text())  # the recipe is recorded
    assert (tmp_path / "sentiment" / "model.keras").read_bytes() != b"not really a model"
    assert (tmp_path / "genre" / "model.keras").read_bytes() == b"not really a model"

    (tmp_path / "genre" / "metrics.json").unlink()
    assert "missing or unreadable" in out_of_date(tmp_path / "genre", "genre")
    assert out_of_date(tmp_path / "nothing", "genre") == "not trained yet"
