"""The experts of this project: one plain function and one Keras model.

Each is named in experts.yaml; `expertd serve --config experts.yaml` imports
this module (from this folder, whatever the current directory) and loads
every expert once.
"""

from __future__ import annotations

import csv
from pathlib import Path

from expertd import KerasExpert


def mine(text):
    """Words and exclamation marks in the text: a plain function is an expert."""
    return {"words": len(text.split()), "exclamations": text.count("!")}


class Tone(KerasExpert):
    """Positive or negative: a tiny Keras model, trained once on examples.tsv when it loads."""

    version = "1"
    description = "Tone: positive or negative, from a tiny Keras model trained on examples.tsv"

    def __init__(self, name=None, *, examples_path, **options):
        """``examples_path``: a TSV file of ``label<TAB>text`` lines (relative to experts.yaml)."""
        super().__init__(name, **options)
        self.examples_path = Path(examples_path)

    def build_model(self):
        """Train the model (a second or two); a bigger model would be read from a file instead."""
        import keras
        import tensorflow as tf

        with open(self.examples_path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f, delimiter="\t") if len(row) == 2]
        labels = [1.0 if label == "positive" else 0.0 for label, _ in rows]
        texts = [text for _, text in rows]
        keras.utils.set_random_seed(0)
        vectorize = keras.layers.TextVectorization(max_tokens=500, output_sequence_length=16)
        vectorize.adapt(texts)
        inputs = keras.Input(shape=(), dtype="string")
        x = keras.layers.Embedding(500, 8)(vectorize(inputs))
        x = keras.layers.GlobalAveragePooling1D()(x)
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
        model.fit(tf.constant(texts), tf.constant(labels), epochs=40, verbose=0)
        return model

    def opinions(self, outputs, inputs):
        """One opinion per text from the model's probabilities (one compiled call per batch)."""
        return [{"label": "positive" if p >= 0.5 else "negative", "score": round(p, 4)}
                for p in outputs[:, 0].tolist()]
