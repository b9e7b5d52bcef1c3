"""Small example experts: a plain function, and two for exercising the server in tests."""

from __future__ import annotations

import time
from typing import Sequence

from expertd.experts.base import Expert


def shouting(text: str) -> dict:
    """Share of upper-case letters among the letters of the text (0..1)."""
    letters = [c for c in text if c.isalpha()]
    upper = sum(c.isupper() for c in letters)
    return {"ratio": round(upper / len(letters), 4) if letters else 0.0}


shouting.opinion_schema = {
    "type": "object",
    "required": ["ratio"],
    "properties": {"ratio": {"type": "number", "minimum": 0, "maximum": 1}},
    "additionalProperties": False,
}


class SlowExpert(Expert):
    """Sleeps ``seconds`` per batch, then answers ``{"slept": seconds}`` (for timeout tests)."""

    version = "1"
    description = "Test expert that sleeps before answering"
    opinion_schema = {
        "type": "object",
        "required": ["slept"],
        "properties": {"slept": {"type": "number", "minimum": 0}},
        "additionalProperties": False,
    }

    def __init__(self, name: str | None = None, *, seconds: float = 15, **options) -> None:
        """``seconds``: how long each ``predict`` call sleeps."""
        super().__init__(name, **options)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise TypeError(f"SlowExpert option seconds must be a number >= 0, not {seconds!r}")
        self.seconds = seconds

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Sleep once for the whole batch, then answer every input."""
        time.sleep(self.seconds)
        return [{"slept": self.seconds} for _ in inputs]


class FailingExpert(Expert):
    """Always raises ``ValueError`` (for error-path tests)."""

    version = "1"
    description = "Test expert that always fails"

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Raise ``ValueError("this expert always fails")``."""
        raise ValueError("this expert always fails")
