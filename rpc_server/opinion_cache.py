"""A cache of opinions for documents seen before: per expert, bounded, least recently used out.

Repeated documents are common (retweets, a pipeline run again over a corpus,
the same text through several chains), and each would be computed again. An
expert's cache maps a key to the opinion it gave:

* the expert's ``version`` and, for an expert that learns, its learner's
  ``model_version`` (read once per call, before the model is asked), so an
  expert that learned, or was replaced by another version, is asked afresh;
* the exact value the expert reads: its field (a string, as is), or for an
  expert that reads the whole document or builds on other experts (``needs``)
  that dict written as canonical JSON (keys sorted). A value JSON cannot write
  (bytes) is not cached.

It holds at most ``size`` opinions (the experts file's ``cache: {size: N}``);
the least recently used goes first (``LRU``). It lives in the server process,
so a reload (new workers) starts empty, and it is shared by every call: a
chain's dependencies (``consensus`` needs ``sentiment``) hit the same cache as
direct calls. The same input twice in one call is computed once. Failures are
never cached. Hits and misses are counted in ``stats()``, in Prometheus
(``expertd_cache_lookups_total``) and in ``experts()``.

Which experts may be cached: those whose opinion is a function of their input
and their version (``Expert.pure``: the Keras experts, VADER, consensus). The
server's ``cache_size`` turns it on for those; another expert (one that reads
a clock, or draws at random) gets a cache only when its own entry asks for one.
A learner (``pure = False``: its opinions change as it learns) is still
correct when cached, since its model version is in the key, but every update
empties its share of the hits, so it is off unless asked for.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Callable, Hashable

#: ``json.dumps`` arguments that write one value one way (the key of a dict input).
_CANONICAL = {"sort_keys": True, "ensure_ascii": False, "separators": (",", ":"),
              "allow_nan": True}


_MISSING = object()


class LRU:
    """A mapping of at most ``size`` items; the least recently read or written goes first."""

    __slots__ = ("size", "items")

    def __init__(self, size: int) -> None:
        """Hold at most ``size`` (>= 1) items."""
        if size < 1:
            raise ValueError(f"an LRU holds at least one item, not {size}")
        self.size = size
        #: The items, least recently used first.
        self.items: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.items

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The item under ``key`` (now the most recently used), or ``default``."""
        value = self.items.get(key, _MISSING)
        if value is _MISSING:
            return default
        self.items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key`` (the most recently used); drop the oldest beyond ``size``."""
        items = self.items
        if key in items:
            items.move_to_end(key)
        items[key] = value
        if len(items) > self.size:
            items.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        self.items.clear()


def input_key(value: Any) -> Hashable | None:
    """The exact input as a key: a string as is, anything else as canonical JSON (``None`` if
    JSON cannot write it). A string and the JSON of another value never collide."""
    if type(value) is str:
        return value
    try:
        return ("json", json.dumps(value, **_CANONICAL))
    except (TypeError, ValueError, RecursionError):
        return None


class OpinionCache:
    """One expert's cache of opinions, with its hit and miss counts."""

    def __init__(self, size: int, version: Callable[[], Hashable]) -> None:
        """Hold ``size`` opinions; ``version()`` is the expert's version now (part of each key)."""
        self.lru = LRU(size)
        self.version = version
        self.hits = 0
        self.misses = 0

    def predict_through(self, values: list, predict: Callable[[list], list]) -> tuple[list, int, int]:
        """One ``(ok, opinion)`` outcome per input, in order: known ones from the cache, the
        others from ``predict(inputs)`` (each distinct input once, the new opinions kept).

        Returns ``(outcomes, hits, misses)``: misses are the inputs ``predict`` was asked
        about; hits the others (known, or repeats within this call). Whatever ``predict``
        raises (``Overloaded``) is raised, and nothing is kept.
        """
        version = self.version()  # before the model is asked: a learner's may move on meanwhile
        outcomes: list = [None] * len(values)
        ask: list[int] = []       # indices of the inputs to compute
        keys: list = []           # and their keys (None: not cacheable)
        repeats: list[tuple[int, int]] = []  # (index, index of the same input among ``ask``)
        first: dict[Hashable, int] = {}
        items = self.lru.items    # the OrderedDict itself: this loop runs once per document
        for i, value in enumerate(values):
            key = value if type(value) is str else input_key(value)
            if key is not None:
                # The version is part of the key and the opinion is the value, with no tuple
                # around it: a tuple holding a dict stays tracked by the cycle collector, and
                # ``size`` of them surviving into its oldest generation made Python walk the
                # whole heap every ~25 calls (rpc_server/collector.py).
                key = (version, key)
                opinion = items.get(key, _MISSING)
                if opinion is not _MISSING:
                    items.move_to_end(key)
                    outcomes[i] = (True, _copy(opinion))
                    continue
                if key in first:
                    repeats.append((i, first[key]))
                    continue
                first[key] = i
            ask.append(i)
            keys.append(key)
        if ask:
            computed = predict([values[i] for i in ask])
            put = self.lru.put
            for i, key, (ok, opinion) in zip(ask, keys, computed):
                outcomes[i] = (ok, opinion)
                if ok and key is not None:
                    put(key, _copy(opinion))  # an older version's entries age out
            for i, j in repeats:
                ok, opinion = outcomes[j]
                outcomes[i] = (ok, _copy(opinion) if ok else opinion)
        hits = len(values) - len(ask)
        self.hits += hits
        self.misses += len(ask)
        return outcomes, hits, len(ask)

    def describe(self) -> dict:
        """``{"size", "entries", "hits", "misses"}`` (for ``experts()``)."""
        return {"size": self.lru.size, "entries": len(self.lru), "hits": self.hits,
                "misses": self.misses}


def _copy(opinion: Any) -> Any:
    """A shallow copy of an opinion dict, so that no caller shares (or changes) the cached one."""
    return dict(opinion) if type(opinion) is dict else opinion


def build_caches(experts: dict, file: Any, learning: Any = None) -> dict[str, OpinionCache]:
    """The caches an experts file asks for, by expert name (experts without one are absent).

    An expert's ``cache: {size: N}`` wins; otherwise a pure expert gets the server's
    ``cache_size``. An expert with ``versions:`` gets none (the experts file refuses its
    ``cache:``): the version that answers moves with promote, rollback and canaries.
    A learner's key holds its ``model_version`` (``learning``'s learner).
    """
    caches = {}
    for spec in file.experts:
        if spec.served is not None:  # versions: who answers moves with promote/rollback; not cached
            continue
        expert = experts[spec.name]
        if spec.cache is not None:
            size = spec.cache.size
        else:
            size = file.server.cache_size if expert.pure else 0
        if size <= 0:
            continue
        learner = learning.learners.get(spec.name) if learning is not None else None
        caches[spec.name] = OpinionCache(size, _version_of(expert, learner))
    return caches


def _version_of(expert: Any, learner: Any) -> Callable[[], Hashable]:
    """``expert``'s version now: ``version``, and its learner's ``model_version`` if it learns."""
    if learner is None:
        return lambda: expert.version
    return lambda: (expert.version, learner.applied_seq)
