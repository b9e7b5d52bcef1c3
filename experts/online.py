"""An expert that starts knowing nothing and learns the labels users teach it.

``OnlineTextExpert`` is a river pipeline, bag of words (lower-cased word
counts) into a multinomial naive Bayes classifier, updated one example at a
time. Before its first example its opinion says that it knows nothing
(``{"label": null, "known_labels": [], "updates": 0}``); after, it names the
most probable of the labels it has been taught, with their probabilities.

It also keeps river's progressive accuracy ("predict, then learn": each
example is first predicted, scored, then learned), reported by ``state``.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Sequence

from expertd.experts.base import Expert

#: Bumped when the checkpoint format changes (older checkpoints are then ignored).
CHECKPOINT_FORMAT = 1
#: Longest label, in characters: what ``learn`` accepts (``rpc_server.learning.MAX_TARGET_CHARS``;
#: a unit test keeps the two equal).
MAX_LABEL_CHARS = 200

_LABEL = {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS}


class OnlineTextExpert(Expert):
    """Text classifier learned online (river BagOfWords | MultinomialNB)."""

    version = "1"
    description = "Learns any text labels it is taught (river naive Bayes); knows nothing at first"
    learns = True
    #: Before any example: ``label`` null, no labels, no updates, no probabilities; after:
    #: a taught label, each known label's probability (0..1), the update count.
    opinion_schema = {
        "type": "object",
        "required": ["label", "known_labels", "updates"],
        "properties": {
            "label": {"anyOf": [_LABEL, {"type": "null"}],
                      "description": "the most probable taught label (null before any)"},
            "probabilities": {"type": "object", "propertyNames": _LABEL,
                              "additionalProperties": {"type": "number", "minimum": 0,
                                                       "maximum": 1}},
            "known_labels": {"type": "array", "items": _LABEL, "uniqueItems": True},
            "updates": {"type": "integer", "minimum": 0,
                        "description": "examples learned so far"},
        },
        "additionalProperties": False,
        "if": {"properties": {"label": {"type": "null"}}},
        "then": {"properties": {"known_labels": {"maxItems": 0}, "updates": {"const": 0}},
                 "not": {"required": ["probabilities"]}},
        "else": {"required": ["probabilities"],
                 "properties": {"known_labels": {"minItems": 1}, "updates": {"minimum": 1}}},
    }

    def __init__(self, name: str | None = None, *, alpha: float = 1.0, **options: Any) -> None:
        """``alpha``: the naive Bayes additive smoothing."""
        super().__init__(name, **options)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise TypeError(f"OnlineTextExpert option alpha must be a number > 0, not {alpha!r}")
        self.alpha = float(alpha)
        self._lock = threading.Lock()  # learn and predict run in different threads
        self._model = None
        self._accuracy = None
        self._updates = 0
        self._scored = 0  # examples predicted before being learned

    def load(self) -> None:
        """Build an empty model (river is imported here, not at import time)."""
        from river import feature_extraction, metrics, naive_bayes

        self._model = (feature_extraction.BagOfWords(lowercase=True)
                       | naive_bayes.MultinomialNB(alpha=self.alpha))
        self._accuracy = metrics.Accuracy()
        self._updates = self._scored = 0

    def _labels(self) -> list:
        return sorted(self._model[-1].class_counts, key=str)

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """The most probable taught label of each text, or ``label: null`` before any."""
        with self._lock:
            labels = self._labels()
            if not labels:
                return [{"label": None, "known_labels": [], "updates": 0} for _ in inputs]
            out = []
            for text in inputs:
                proba = self._model.predict_proba_one(text)
                probabilities = {str(k): round(float(proba.get(k, 0.0)), 4) for k in labels}
                best = max(labels, key=lambda k: (proba.get(k, 0.0), str(k)))
                out.append({"label": best, "probabilities": probabilities,
                            "known_labels": labels, "updates": self._updates})
            return out

    def learn(self, inputs: Sequence[str], targets: Sequence[Any]) -> None:
        """Predict, score, then learn each example, in order."""
        with self._lock:
            for text, label in zip(inputs, targets):
                if self._updates:
                    self._accuracy.update(label, self._model.predict_one(text))
                    self._scored += 1
                self._model.learn_one(text, label)
                self._updates += 1

    def state(self) -> dict:
        """Examples learned, the labels known and the progressive accuracy."""
        with self._lock:
            return {"updates": self._updates, "known_labels": self._labels() if self._model else [],
                    "progressive_accuracy": round(self._accuracy.get(), 4) if self._scored else None}

    def checkpoint(self) -> bytes:
        """The model, its accuracy and update count, pickled."""
        with self._lock:
            return pickle.dumps((CHECKPOINT_FORMAT, self._model, self._accuracy, self._updates,
                                 self._scored), protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """Replace the model with a pickled ``checkpoint`` (a file the server wrote itself)."""
        fmt, *saved = pickle.loads(data)
        if fmt != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {fmt} is not {CHECKPOINT_FORMAT}")
        with self._lock:
            self._model, self._accuracy, self._updates, self._scored = saved
