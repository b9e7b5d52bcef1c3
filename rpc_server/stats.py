"""Per-expert counters and latencies, for ``stats()`` and Prometheus."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

#: How many recent latencies each expert keeps for its percentiles.
WINDOW = 4096


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of an already sorted list, nearest-rank."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class ExpertStats:
    """What one expert has done since the server started."""

    calls: int = 0
    errors: int = 0
    invalid: int = 0
    shed: int = 0
    items: int = 0
    batches: int = 0
    batched_items: int = 0
    model_seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=WINDOW))

    def as_dict(self) -> dict:
        """JSON-able summary with p50/p99 over the recent window."""
        ordered = sorted(self.latencies_ms)
        return {
            "calls": self.calls,
            "errors": self.errors,
            "invalid": self.invalid,
            "shed": self.shed,
            "items": self.items,
            "batches": self.batches,
            "batched_items": self.batched_items,
            "mean_batch_size": round(self.batched_items / self.batches, 2) if self.batches else 0.0,
            "model_seconds": round(self.model_seconds, 3),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "latency_ms": {
                "p50": round(percentile(ordered, 50), 3),
                "p99": round(percentile(ordered, 99), 3),
                "mean": round(sum(ordered) / len(ordered), 3) if ordered else 0.0,
                "window": len(ordered),
            },
        }


class Stats:
    """Counters for every expert, mirrored into a Prometheus registry."""

    def __init__(self, names: list[str]) -> None:
        """Start all counters at zero for the experts ``names``."""
        self.started = time.time()
        self.experts = {name: ExpertStats() for name in names}
        self.registry = CollectorRegistry()
        self._calls = Counter("expertd_calls", "Opinions asked of an expert, by outcome.",
                              ["expert", "outcome"], registry=self.registry)
        self._latency = Histogram(
            "expertd_call_seconds", "Time to answer one call, by expert.", ["expert"],
            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self._batch = Histogram("expertd_batch_size", "Inputs per model call, by expert.",
                                ["expert"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                                registry=self.registry)
        self._cache = Counter("expertd_cache_lookups", "Inputs looked up in an expert's cache of "
                              "opinions (rpc_server.opinion_cache), by outcome: hit or miss.",
                              ["expert", "outcome"], registry=self.registry)

    def record_call(self, name: str, items: int, seconds: float, ok: bool) -> None:
        """Count one call to expert ``name`` that covered ``items`` documents."""
        entry = self.experts.get(name)
        if entry is None:
            return
        entry.calls += 1
        entry.items += items
        entry.latencies_ms.append(seconds * 1000.0)
        if not ok:
            entry.errors += 1
        self._calls.labels(name, "ok" if ok else "error").inc()
        self._latency.labels(name).observe(seconds)

    def record_invalid(self, name: str, documents: int) -> None:
        """Count documents refused before reaching the model (not part of its latency)."""
        entry = self.experts.get(name)
        if entry is not None:
            entry.invalid += documents
            self._calls.labels(name, "invalid").inc(documents)

    def record_cache(self, name: str, hits: int, misses: int) -> None:
        """Count the inputs of one call found in the expert's cache (``hits``) and not (``misses``)."""
        entry = self.experts.get(name)
        if entry is None:
            return
        entry.cache_hits += hits
        entry.cache_misses += misses
        if hits:
            self._cache.labels(name, "hit").inc(hits)
        if misses:
            self._cache.labels(name, "miss").inc(misses)

    def record_shed(self, name: str) -> None:
        """Count one request answered ``Overloaded``."""
        entry = self.experts.get(name)
        if entry is not None:
            entry.shed += 1
            self._calls.labels(name, "overloaded").inc()

    def record_batch(self, name: str, size: int, seconds: float) -> None:
        """Count one model call of ``size`` inputs."""
        entry = self.experts[name]
        entry.batches += 1
        entry.batched_items += size
        entry.model_seconds += seconds
        self._batch.labels(name).observe(size)

    def as_dict(self) -> dict:
        """Everything, JSON-able."""
        return {"uptime_s": round(time.time() - self.started, 3),
                "experts": {n: s.as_dict() for n, s in self.experts.items()}}
