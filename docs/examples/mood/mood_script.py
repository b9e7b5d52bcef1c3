"""A stdin/stdout expert: JSON lines in, the same lines out with its opinion added.

    python mood_script.py < documents.jsonl

Every run imports TensorFlow and loads the model again before the first line.
"""

import json
import os
import sys

import keras
import tensorflow as tf

MODEL = keras.saving.load_model(os.environ.get("MOOD_MODEL", "model.keras"), compile=False)


def opinion(doc):
    """What this expert thinks of one document (it reads the whole document)."""
    out = MODEL.predict(tf.constant([doc["text"]]), verbose=0)
    valence = float(out["valence"][0][0])
    return {"mood": "up" if valence > 0 else "down", "valence": round(valence, 2),
            "long": len(doc["text"]) > 80}


for line in sys.stdin:
    doc = json.loads(line)
    doc.setdefault("opinions", {})["mood"] = opinion(doc)
    print(json.dumps(doc), flush=True)
