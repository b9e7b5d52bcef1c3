"""Does an expert pay a fixed cost per call? (``expertd check --load``.)

A model called through Keras' ``model.predict`` costs about 43 ms per call
whatever the batch; the same model called compiled costs 0.3 ms. Timing one
document against a batch of documents shows it: when one document takes more
than ten times the per-document time of a batch, the expert says so.
"""

from __future__ import annotations

import time
from typing import Any

from expertd.experts.base import Expert

SAMPLE_TEXT = "expertd check: a short sample sentence to time the expert with."
#: Documents in the timed batch: a fixed cost per call shows as about BATCH times its
#: per-document share, so 64 leaves a wide margin over RATIO on a loaded machine (with 16,
#: model.predict's ~16x fell under 10x when a busy machine slowed the batched calls).
BATCH = 64
#: Warn when one document costs more than this many times its share of a batch...
RATIO = 10.0
#: ...and more than this (seconds): faster calls are not worth a warning (model.predict's
#: fixed cost is ~40 ms; a compiled call's ~0.3 ms stays far below even on a loaded machine).
FLOOR = 0.010


def sample_input(expert: Expert) -> Any | None:
    """An input the expert can take without a real document (``None``: cannot time it)."""
    if getattr(expert, "takes_opinions", False) or expert.needs:
        return None
    if expert.field is None:
        return {"text": SAMPLE_TEXT}
    if getattr(expert, "sample_input", None) is not None and expert.input_type in (None, str):
        return expert.sample_input if isinstance(expert.sample_input, str) else SAMPLE_TEXT
    return SAMPLE_TEXT if expert.input_type in (None, str) else None


def per_call_warning(expert: Expert, repeats: int = 3) -> str | None:
    """One line naming the expert when one document takes > 10x its batched share; else None.

    Calls ``predict`` ``2 * repeats + 1`` times; an expert that fails on the sample is not timed.
    """
    value = sample_input(expert)
    if value is None:
        return None
    try:
        expert.predict([value])  # warm up
        # min, not median: other load only ever adds time, so the least is the call's own cost
        single = min(_timed(expert, [value]) for _ in range(repeats))
        batched = min(_timed(expert, [value] * BATCH) for _ in range(repeats)) / BATCH
    except Exception:
        return None
    if single > FLOOR and single > RATIO * batched:
        return (f"warning: expert {expert.name!r}: predict() for one document takes "
                f"{single * 1000:.1f} ms, {single / max(batched, 1e-9):.0f}x its per-document time in "
                f"a batch of {BATCH} ({batched * 1000:.2f} ms): a fixed cost per call; if it calls "
                f"Keras' model.predict(), call the model through expertd.compiled(model) or "
                f"subclass expertd.KerasExpert instead")
    return None


def _timed(expert: Expert, inputs: list) -> float:
    began = time.perf_counter()
    expert.predict(inputs)
    return time.perf_counter() - began
