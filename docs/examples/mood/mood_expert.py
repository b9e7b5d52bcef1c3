"""The same expert, served by expertd: the model is loaded once, when the server starts.

    expertd serve --config experts.yaml &
    expertd pipe mood < documents.jsonl
"""

import os

import keras

from expertd import compiled, whole_document

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = compiled(keras.saving.load_model(os.environ.get("MOOD_MODEL", os.path.join(HERE, "model.keras")),
                                         compile=False))


@whole_document
def mood(doc):
    """What this expert thinks of one document (it reads the whole document)."""
    out = MODEL([doc["text"]])
    valence = float(out["valence"][0][0])
    return {"mood": "up" if valence > 0 else "down", "valence": round(valence, 2),
            "long": len(doc["text"]) > 80}
