"""KerasExpert / compiled(model): one tf.function call per batch; the timing check names slow experts."""

from __future__ import annotations

import numpy as np
import pytest

from expertd import KerasExpert, compiled
from expertd.experts.timing import per_call_warning

keras = pytest.importorskip("keras")

TEXTS = ["good great fine", "bad awful poor", "fine and good", "poor and bad"]


def tiny_model():
    vectorize = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=8)
    vectorize.adapt(TEXTS)
    inputs = keras.Input(shape=(), dtype="string")
    x = keras.layers.Embedding(50, 4)(vectorize(inputs))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


class Tiny(KerasExpert):
    def build_model(self):
        return tiny_model()

    def opinions(self, outputs, inputs):
        return [{"score": round(float(row[0]), 4)} for row in outputs]


class Predicting(Tiny):
    """The slow way: Keras' model.predict per call."""

    def predict(self, inputs):
        return self.opinions(self.model.predict(np.array(list(inputs), dtype=object), verbose=0), inputs)


def test_compiled_answers_what_the_model_answers():
    model = tiny_model()
    run = compiled(model)
    expected = model(np.array(TEXTS, dtype=object), training=False).numpy()
    assert np.allclose(run(TEXTS), expected, atol=1e-6)
    assert run(TEXTS[:1]).shape == (1, 1)  # any batch size, one signature


def test_a_keras_expert_is_short_and_answers_per_input():
    expert = Tiny("tiny")
    expert.load()
    out = expert.predict(TEXTS)
    assert len(out) == 4 and all(0 <= o["score"] <= 1 for o in out)
    assert expert.predict([]) == []


def test_the_timing_check_names_an_expert_that_calls_model_predict():
    slow, fast = Predicting("slow"), Tiny("fast")
    slow.load()
    fast.load()
    # A timing check: a busy machine can slow one measurement, so it gets three tries
    # (model.predict's fixed cost makes one document ~64x its share of a batch, the bar 10x).
    warning = next((w for w in (per_call_warning(slow) for _ in range(3)) if w is not None), None)
    assert warning is not None and warning.startswith("warning: expert 'slow': predict() for one document")
    assert "expertd.compiled(model)" in warning and "\n" not in warning
    assert any(per_call_warning(fast) is None for _ in range(3))
