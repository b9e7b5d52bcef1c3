"""Experts that misbehave on purpose, for the tests of failure isolation and overload.

* ``PoisonExpert`` fails a whole model call when any input in it contains ``poison``
  (as a real model does when one input breaks its batch).
* ``BadOutputExpert`` returns, for some inputs, something that is not an opinion.
* ``CountingExpert`` sleeps per model call and counts the inputs it computed,
  so a test can see that work was (or was not) done.
* ``SlowLearner`` learns slowly, so a ``learn`` call outlives its caller's deadline.
* ``CallSizeExpert`` sleeps per model call and answers how many inputs that
  call held, so a test can see which requests were computed together.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

from expertd.experts.base import Expert
from expertd.experts.online import OnlineTextExpert

#: The server-side path ``PoisonExpert`` names when an input asks for a missing file.
MISSING_FILE = "/srv/expertd-secret-dir/models/vocab.txt"


class PoisonExpert(Expert):
    """Answers ``{"length": n}``; a batch holding an input with "poison" raises for all of it."""

    version = "1"
    description = "Test expert whose model call fails when one input is poisoned"
    opinion_schema = {"type": "object", "required": ["length"],
                      "properties": {"length": {"type": "integer"}}}

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Fail the whole call if any input contains "poison" (or "missing file", as a
        model library that cannot find its resource fails, naming a server path)."""
        if any("missing file" in text for text in inputs):
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{MISSING_FILE}'")
        if any("poison" in text for text in inputs):
            raise ValueError("poisoned input in this batch")
        return [{"length": len(text)} for text in inputs]


#: What ``BadOutputExpert`` returns for each trigger text.
BAD_OUTPUTS = {
    "float": 1.5,
    "none": None,
    "set": {1, 2},
    "list": [1, 2],
    "nan": {"score": float("nan")},
    "infinity": {"score": float("inf")},
    "bigint": {"score": 2 ** 70},
    "bytes-key": {b"k": 1},
    "object": {"score": object()},
    "schema": {"wrong": 1},
    "out-of-range": {"score": 1e308},
    "nested-out-of-range": {"score": 1, "parts": {"a": -2}},
}


class BadOutputExpert(Expert):
    """Returns ``BAD_OUTPUTS[text]`` for a trigger text and ``{"score": 1}`` otherwise."""

    version = "1"
    description = "Test expert that returns non-opinions for some inputs"
    opinion_schema = {"type": "object", "required": ["score"],
                      "properties": {"score": {"type": "number", "minimum": 0, "maximum": 10},
                                     "parts": {"type": "object", "additionalProperties": {
                                         "type": "number", "minimum": 0}}}}

    def predict(self, inputs: Sequence[str]) -> list:
        """One output per input; some are not opinions."""
        return [BAD_OUTPUTS.get(text, {"score": 1}) for text in inputs]


class CountingExpert(Expert):
    """Sleeps ``seconds`` per model call; answers how many inputs it has computed so far."""

    version = "1"
    description = "Test expert that counts the inputs it computed"

    def __init__(self, name: str | None = None, *, seconds: float = 0.5,
                 per_input: float = 0.0, **options) -> None:
        """``seconds`` per model call, plus ``per_input`` seconds per input."""
        super().__init__(name, **options)
        self.seconds = float(seconds)
        self.per_input = float(per_input)
        self.computed = 0
        self._lock = threading.Lock()

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Sleep, count, answer ``{"computed": total_so_far}`` for each input."""
        time.sleep(self.seconds + self.per_input * len(inputs))
        with self._lock:
            self.computed += len(inputs)
            total = self.computed
        return [{"computed": total} for _ in inputs]


class CallSizeExpert(CountingExpert):
    """Sleeps ``seconds`` plus ``per_input`` per input; answers ``{"call_size": inputs in the call}``."""

    description = "Test expert that tells how many inputs its model call held"

    def __init__(self, name: str | None = None, *, seconds: float = 0.002,
                 per_input: float = 0.00002, **options) -> None:
        """``seconds`` per model call, plus ``per_input`` seconds per input."""
        super().__init__(name, seconds=seconds, per_input=per_input, **options)

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """Sleep (and count), then answer ``{"call_size": len(inputs)}`` for each input."""
        super().predict(inputs)
        return [{"call_size": len(inputs)} for _ in inputs]


class BrokenMetricsExpert(PoisonExpert):
    """A ``PoisonExpert`` whose ``metrics()`` raises: ``experts()`` then hits a server bug."""

    description = "Test expert whose metrics cannot be read"

    def metrics(self) -> dict:
        """Fail the way a bug would, with a path in the message that must not reach a caller."""
        raise RuntimeError("cannot read /srv/secret/metrics.json")


class SlowLearner(OnlineTextExpert):
    """``OnlineTextExpert`` that sleeps ``learn_delay_s`` before each chunk it learns."""

    def __init__(self, name: str | None = None, *, learn_delay_s: float = 0.2, **options) -> None:
        """``learn_delay_s``: seconds slept per ``learn`` call."""
        super().__init__(name, **options)
        self.learn_delay_s = float(learn_delay_s)

    def learn(self, inputs: Sequence[str], targets: Sequence) -> None:
        """Sleep, then learn."""
        time.sleep(self.learn_delay_s)
        super().learn(inputs, targets)
