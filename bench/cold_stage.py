"""The old way, for comparison: a pipe stage that loads TensorFlow and the model itself.

Reads one JSON document on stdin, imports TensorFlow and Keras, loads
``models/sentiment/model.keras``, runs the model once (eagerly: the cheapest
way for a single text; no ``tf.function`` tracing, no ``model.predict``), and
prints the document with ``opinions.sentiment`` added, in the same shape as
``expertd pipe sentiment``.

    echo '{"text": "I love it"}' | python bench/cold_stage.py [MODEL_DIR]

MODEL_DIR defaults to ``$BENCH_MODEL_DIR``, else ``models/sentiment``.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    """One document in, the same document with its sentiment opinion out."""
    model_dir = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_MODEL_DIR")
                 or os.path.join(ROOT, "models", "sentiment"))
    doc = json.loads(sys.stdin.read())

    import keras
    import tensorflow as tf

    from expertd.experts.keras_text import SENTIMENT_LABELS

    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    out = model(tf.constant([doc["text"]]), training=False)
    probs = out["label"].numpy()[0]
    best = int(probs.argmax())
    opinion = {"valence": round(float(out["valence"].numpy()[0, 0]), 4),
               "label": SENTIMENT_LABELS[best],
               "confidence": round(float(probs[best]), 4)}
    doc.setdefault("opinions", {})["sentiment"] = opinion
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, separators=(", ", ": ")) + "\n")


if __name__ == "__main__":
    main()
