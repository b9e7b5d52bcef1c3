"""Experts for the chain tests (no TensorFlow): they count and show what they were given."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Sequence

from expertd.experts.base import Expert

#: Rendezvous of ``meet_a`` and ``meet_b``: both reach it only if they run at the same time.
_MEETING = threading.Barrier(2)
MEETING_TIMEOUT_S = 10.0


class Tally(Expert):
    """Answers ``{"seen": n, "chars": len}``: n = how often this expert has computed this text."""

    version = "1"
    description = "Counts how often it has computed each text (chain tests)"

    def __init__(self, name: str | None = None, **options) -> None:
        """No options beyond the base ones."""
        super().__init__(name, **options)
        self.seen: Counter = Counter()

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Count each text, answer its count so far."""
        out = []
        for text in inputs:
            self.seen[text] += 1
            out.append({"seen": self.seen[text], "chars": len(text)})
        return out


class Picky(Tally):
    """A ``Tally`` that fails (``ValueError``) for a text containing ``poison``."""

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Fail for the whole batch if one text is poisoned (the batcher isolates it)."""
        if any("poison" in text for text in inputs):
            raise ValueError("poisoned text")
        return super().predict(inputs)


class Combine(Tally):
    """A chained expert: echoes the opinions it was given (its input minus the text)."""

    takes_opinions = True

    def predict(self, inputs: Sequence[dict]) -> list[dict]:
        """``{"seen", "got": {key: opinion}}`` per input."""
        counted = super().predict([item[self.field] for item in inputs])
        return [dict(count, got={k: v for k, v in item.items() if k != self.field})
                for count, item in zip(counted, inputs)]


class Meet(Expert):
    """Waits (up to 10 s) for its partner to run at the same time; answers whether it met it."""

    version = "1"
    description = "Rendezvous with another Meet expert (concurrency test)"

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """``{"met": true}`` if the partner arrived while this one waited."""
        try:
            _MEETING.wait(MEETING_TIMEOUT_S)
            met = True
        except threading.BrokenBarrierError:
            _MEETING.reset()
            met = False
        return [{"met": met} for _ in inputs]


def echo_pair(item: dict) -> dict:
    """A plain function that builds on opinions: the keys it was given."""
    return {"keys": sorted(item)}
