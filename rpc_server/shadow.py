"""Shadowing a version, and the per-version numbers (docs/versions.md).

With ``shadow: 3``, every call that the default version answers is also run
by version 3, in a greenlet of its own once the answer is made: the caller
never waits for it, and its opinions are compared, never returned. Per field
of the opinions: text and boolean fields count as agreeing when equal (label
agreement), numeric fields add their absolute difference (mean absolute
difference). A shadow whose queue is full is skipped, never queued behind.

``VersionMetrics`` keeps these and the per-version latency and errors, in the
server's Prometheus registry and as numbers ``experts()`` lists.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import gevent
from prometheus_client import Counter, Histogram

log = logging.getLogger("expertd.versions")


def compare(serving: dict, shadow: dict, into: dict) -> None:
    """Add one document's comparison of two opinions to ``into`` (per field)."""
    for key, value in serving.items():
        other = shadow.get(key) if isinstance(shadow, dict) else None
        field = into.setdefault(key, {"compared": 0, "agreed": 0, "abs_diff": 0.0, "numeric": False})
        if isinstance(value, bool) or isinstance(value, str):
            field["compared"] += 1
            field["agreed"] += value == other
        elif isinstance(value, (int, float)) and isinstance(other, (int, float)) \
                and not isinstance(other, bool) and math.isfinite(value) and math.isfinite(other):
            field["compared"] += 1
            field["numeric"] = True
            field["abs_diff"] += abs(value - other)


class VersionMetrics:
    """Per-version latency and errors, and shadow agreement, in ``registry`` and in memory."""

    def __init__(self, registry) -> None:
        """Register the collectors in the server's Prometheus ``registry``."""
        self._latency = Histogram(
            "expertd_version_call_seconds", "Time one version of an expert took for a call.",
            ["expert", "version"],
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
            registry=registry)
        self._calls = Counter("expertd_version_calls", "Calls answered by one version, by outcome.",
                              ["expert", "version", "outcome"], registry=registry)
        self._compared = Counter(
            "expertd_shadow_compared", "Opinion fields compared between the serving version and "
            "its shadow.", ["expert", "serving", "shadow", "field"], registry=registry)
        self._agreed = Counter(
            "expertd_shadow_agreed", "Text or boolean opinion fields equal in the serving version "
            "and its shadow.", ["expert", "serving", "shadow", "field"], registry=registry)
        self._abs_diff = Counter(
            "expertd_shadow_abs_diff", "Sum of absolute differences of numeric opinion fields "
            "between the serving version and its shadow.", ["expert", "serving", "shadow", "field"],
            registry=registry)
        self._shadow = Counter("expertd_shadow_documents", "Documents given to a shadow version, "
                               "by outcome (compared, skipped: its queue was full, failed).",
                               ["expert", "shadow", "outcome"], registry=registry)
        #: expert -> (serving, shadow) -> field -> {compared, agreed, abs_diff, numeric}
        self.agreement: dict[str, dict[tuple[str, str], dict]] = {}

    def record_call(self, name: str, version: str, seconds: float, ok: bool) -> None:
        """One call answered by ``version`` of ``name``."""
        self._latency.labels(name, version).observe(seconds)
        self._calls.labels(name, version, "ok" if ok else "error").inc()

    def record_comparison(self, name: str, serving: str, shadow: str, fields: dict,
                          documents: int) -> None:
        """What one shadow run found (``fields`` as ``compare`` fills it)."""
        self._shadow.labels(name, shadow, "compared").inc(documents)
        total = self.agreement.setdefault(name, {}).setdefault((serving, shadow), {})
        for field, numbers in fields.items():
            if not numbers["compared"]:
                continue
            self._compared.labels(name, serving, shadow, field).inc(numbers["compared"])
            if numbers["numeric"]:
                self._abs_diff.labels(name, serving, shadow, field).inc(numbers["abs_diff"])
            else:
                self._agreed.labels(name, serving, shadow, field).inc(numbers["agreed"])
            kept = total.setdefault(field, {"compared": 0, "agreed": 0, "abs_diff": 0.0,
                                            "numeric": numbers["numeric"]})
            for key in ("compared", "agreed", "abs_diff"):
                kept[key] += numbers[key]

    def record_shadow_outcome(self, name: str, shadow: str, outcome: str, documents: int) -> None:
        """Documents a shadow did not compare (``skipped`` or ``failed``)."""
        self._shadow.labels(name, shadow, outcome).inc(documents)

    def summary(self, name: str) -> list[dict]:
        """``experts()``'s view: per (serving, shadow) pair, agreement and mean abs difference."""
        out = []
        for (serving, shadow), fields in self.agreement.get(name, {}).items():
            agreement, mean_abs_diff = {}, {}
            for field, n in fields.items():
                if n["numeric"]:
                    mean_abs_diff[field] = round(n["abs_diff"] / n["compared"], 6)
                else:
                    agreement[field] = round(n["agreed"] / n["compared"], 6)
            compared = max((n["compared"] for n in fields.values()), default=0)
            out.append({"serving": serving, "shadow": shadow, "documents": compared,
                        "agreement": agreement, "mean_abs_diff": mean_abs_diff})
        return out


def run_shadow(metrics: VersionMetrics, name: str, serving: str, shadow: str, batcher: Any,
               values: list, answers: list) -> None:
    """Off the caller's path: ask ``batcher`` (the shadow's) about ``values``; compare with the
    serving version's ``answers`` (``(ok, opinion)`` pairs in the same order)."""
    if batcher.queued_docs + len(values) > batcher.max_queued_docs // 2:
        metrics.record_shadow_outcome(name, shadow, "skipped", len(values))
        return
    try:
        outcomes = batcher.predict_each(values, None)
    except Exception as exc:  # Overloaded, ShuttingDown: the shadow is best effort
        metrics.record_shadow_outcome(name, shadow, "failed", len(values))
        log.debug("shadow %s@%s: %s", name, shadow, exc)
        return
    fields: dict = {}
    compared = failed = 0
    for (ok, opinion), (shadow_ok, shadow_opinion) in zip(answers, outcomes):
        if not shadow_ok:
            failed += 1
        elif ok and isinstance(opinion, dict):
            compare(opinion, shadow_opinion, fields)
            compared += 1
    if failed:
        metrics.record_shadow_outcome(name, shadow, "failed", failed)
    if compared:
        metrics.record_comparison(name, serving, shadow, fields, compared)


def spawn_shadow(*args) -> None:
    """``run_shadow`` in a greenlet of its own (the caller's answer does not wait)."""
    gevent.spawn(run_shadow, *args)
