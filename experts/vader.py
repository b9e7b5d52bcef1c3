"""VADER: the rule-based sentiment analyser of Hutto & Gilbert (2014), no model to train."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

from expertd.experts.base import Expert

try:
    VADER_VERSION = version("vaderSentiment")
except PackageNotFoundError:  # not installed; load() will say so
    VADER_VERSION = "unknown"

#: Standard VADER thresholds on the compound score.
POSITIVE_FROM = 0.05
NEGATIVE_TO = -0.05


def compound_label(compound: float) -> str:
    """``positive`` if compound >= 0.05, ``negative`` if <= -0.05, else ``neutral``."""
    if compound >= POSITIVE_FROM:
        return "positive"
    if compound <= NEGATIVE_TO:
        return "negative"
    return "neutral"


class VaderExpert(Expert):
    """Lexicon-and-rules sentiment (VADER): compound score in -1..1 and pos/neu/neg shares."""

    pure = True  # the same input and version, the same opinion: its opinions may be cached

    version = VADER_VERSION
    description = "VADER rule-based sentiment: compound score (-1..1), pos/neu/neg shares and a label"
    opinion_schema = {
        "type": "object",
        "required": ["compound", "pos", "neu", "neg", "label"],
        "properties": {
            "compound": {"type": "number", "minimum": -1, "maximum": 1,
                         "description": "normalised sum of the lexicon's valences"},
            "pos": {"type": "number", "minimum": 0, "maximum": 1, "description": "share of positive text"},
            "neu": {"type": "number", "minimum": 0, "maximum": 1, "description": "share of neutral text"},
            "neg": {"type": "number", "minimum": 0, "maximum": 1, "description": "share of negative text"},
            "label": {"type": "string", "enum": ["negative", "neutral", "positive"]},
        },
        "additionalProperties": False,
    }

    def __init__(self, name: str | None = None, **options) -> None:
        """No options beyond the base ones."""
        super().__init__(name, **options)
        self._analyzer = None

    def load(self) -> None:
        """Read VADER's lexicon (once)."""
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Return ``{"compound", "pos", "neu", "neg", "label"}`` per text."""
        if self._analyzer is None:
            self.load()
        opinions = []
        for text in inputs:
            scores = self._analyzer.polarity_scores(text)
            opinion = {key: round(float(scores[key]), 4) for key in ("compound", "pos", "neu", "neg")}
            opinion["label"] = compound_label(opinion["compound"])
            opinions.append(opinion)
        return opinions
