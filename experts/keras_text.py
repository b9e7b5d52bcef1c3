"""Experts backed by the Keras text models that ``python -m expertd.experts.train`` writes.

Each model takes raw strings (its vectorizer is inside the saved model). On
``load`` the model is wrapped in a single ``tf.function`` with a fixed input
signature, so ``predict`` is one graph call per batch from any thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from expertd.experts.base import QUIET_TENSORFLOW, Expert, quiet_tensorflow, read_metrics  # noqa: F401
from expertd.experts.data import SOURCES

quiet_tensorflow()

#: Sentiment classes; see ``valence_band`` for how valence maps to them.
SENTIMENT_LABELS = ("negative", "neutral", "positive")
#: Genre classes, in the model's output order.
GENRE_LABELS = tuple(SOURCES.values())
NEGATIVE_BELOW = -0.5
POSITIVE_ABOVE = 0.5
#: The human rating scale the valence is on (VADER's ground truth: means of -4..+4 ratings).
VALENCE_MIN = -4.0
VALENCE_MAX = 4.0


def valence_in_range(valence: float) -> float:
    """``valence`` held to the rating scale ``VALENCE_MIN..VALENCE_MAX``.

    The valence head is an unbounded linear regression: on text unlike its
    training sentences (one phrase repeated eight times) it extrapolates past
    the scale, e.g. 7.88. A mean of -4..+4 ratings cannot leave that scale, so
    the nearest point on it is the better estimate (never a worse squared
    error). The expert clamps here, where the cause is known; the server's
    output check (``rpc_server.outputs``) refuses, rather than clamps, any
    other out-of-range value, so an expert's bug is not hidden.
    """
    return min(max(valence, VALENCE_MIN), VALENCE_MAX)


def rounded(values) -> list[float]:
    """``[round(v, 4) for v in values.tolist()]`` for a numpy array, in one vectorised step.

    For float32 values (what the models output) the product ``v * 10**4`` is
    exact in float64 (24 + 10 significant bits), so ``rint`` rounds the exact
    value half to even, as ``round`` does, and the division gives the double
    nearest the 4-decimal result, as ``round`` does: the same floats, bit for
    bit (checked over every 7th float32 in [0, 1) and random ones elsewhere;
    NaN, infinities and -0.0 included). Other dtypes take ``round`` itself.
    """
    import numpy as np

    if values.dtype != np.float32:
        return [round(value, 4) for value in values.tolist()]
    return (np.rint(values.astype(np.float64) * 10_000.0) / 10_000.0).tolist()


def valence_band(valence: float) -> int:
    """Index into ``SENTIMENT_LABELS``: negative < -0.5 <= neutral <= 0.5 < positive."""
    if valence < NEGATIVE_BELOW:
        return 0
    if valence > POSITIVE_ABOVE:
        return 2
    return 1


class KerasTextExpert(Expert):
    """A Keras model saved as ``<model_dir>/model.keras`` that maps strings to outputs."""

    pure = True  # the same input and version, the same opinion: its opinions may be cached

    def __init__(self, name: str | None = None, *, model_dir: str, **options) -> None:
        """Remember where the model lives; nothing is read until ``load``."""
        super().__init__(name, **options)
        self.model_dir = Path(model_dir)
        self._run = None

    def load(self) -> None:
        """Load the model once, wrap it in one ``tf.function`` and warm it up."""
        if self._run is not None:
            return
        path = self.model_dir / "model.keras"
        if not path.exists():
            raise FileNotFoundError(
                f"expert {self.name!r}: no trained model at {path}; run `make models` "
                f"(or `python -m expertd.experts.train`) first")
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(path, compile=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def run(texts):
            return model(texts, training=False)

        self._model = model
        self._run = run
        run(tf.constant(["warm up"]))

    def _outputs(self, inputs: Sequence[str]):
        """Run the model on a batch and return its outputs as numpy arrays."""
        if self._run is None:
            raise RuntimeError(f"expert {self.name!r}: predict() called before load()")
        import tensorflow as tf

        out = self._run(tf.constant(list(inputs), dtype=tf.string))
        if isinstance(out, dict):
            return {key: value.numpy() for key, value in out.items()}
        return out.numpy()

    def metrics(self) -> dict:
        """The held-out metrics saved beside the model."""
        return read_metrics(self.model_dir)


class SentimentExpert(KerasTextExpert):
    """Mean human valence (-4..+4) plus a negative/neutral/positive label."""

    version = "2"  # 2: 64 tokens per text (experts.train.SEQUENCE_LENGTH), was 128
    description = ("Sentiment: mean human valence (-4..+4) and a negative/neutral/positive label, "
                   "trained on VADER's ICWSM-2014 ratings")
    opinion_schema = {
        "type": "object",
        "required": ["valence", "label", "confidence"],
        "properties": {
            "valence": {"type": "number", "minimum": VALENCE_MIN, "maximum": VALENCE_MAX,
                        "description": "predicted mean human rating, -4 (negative) to +4 (positive)"},
            "label": {"type": "string", "enum": list(SENTIMENT_LABELS)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1,
                           "description": "the classifier's probability of the label"},
        },
        "additionalProperties": False,
    }

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Return ``{"valence", "label", "confidence"}`` per text (valence held to -4..+4)."""
        if not inputs:
            return []
        out = self._outputs(inputs)
        probs = out["label"]
        best = probs.argmax(axis=1)  # numpy over the batch: clamp and round vectorised
        confidence = rounded(probs[range(len(best)), best])
        # valence_in_range per value, vectorised (NaN stays NaN, for the output check to refuse)
        valence = rounded(out["valence"][:, 0].clip(VALENCE_MIN, VALENCE_MAX))
        labels = map(SENTIMENT_LABELS.__getitem__, best.tolist())
        return [{"valence": v, "label": label, "confidence": p}
                for v, label, p in zip(valence, labels, confidence)]


class GenreExpert(KerasTextExpert):
    """Which kind of text this reads like: tweet, movie review, product review, news editorial."""

    version = "1"
    description = "Genre: tweet / movie_review / product_review / news_editorial, with probabilities"
    opinion_schema = {
        "type": "object",
        "required": ["label", "probabilities"],
        "properties": {
            "label": {"type": "string", "enum": list(GENRE_LABELS)},
            "probabilities": {
                "type": "object",
                "description": "probability of each genre (they sum to 1)",
                "required": list(GENRE_LABELS),
                "properties": {label: {"type": "number", "minimum": 0, "maximum": 1}
                               for label in GENRE_LABELS},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Return ``{"label", "probabilities"}`` per text."""
        if not inputs:
            return []
        probs = self._outputs(inputs)
        width = probs.shape[1]
        flat = rounded(probs.reshape(-1))  # every probability rounded in one vectorised step
        return [{"label": GENRE_LABELS[best],
                 "probabilities": dict(zip(GENRE_LABELS, flat[i * width:(i + 1) * width]))}
                for i, best in enumerate(probs.argmax(axis=1).tolist())]
