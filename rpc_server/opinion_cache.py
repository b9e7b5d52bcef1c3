"""A cache of opinions for documents seen before: per expert, bounded, least recently used out.

Repeated documents are common (retweets, a pipeline run again over a corpus,
the same text through several chains), and each would be computed again. An
expert's cache holds the opinions of one version of the expert, its
``version`` and, for an expert that learns, its learner's ``model_version``
(read once per call, before the model is asked): when the version moves on,
the cache starts again, empty, so an expert that learned, or was replaced by
another version, is asked afresh. Within a version the key is the exact value
the expert reads: its field (a string, as is), or for an expert that reads
the whole document or builds on other experts (``needs``) that dict written as
canonical JSON (keys sorted). A value JSON cannot write (bytes) is not cached.

A text expert's inputs (all strings, as a text field always is) take a path
whose lookups are one pass in C (``_through``).

It holds at most ``size`` opinions (the experts file's ``cache: {size: N}``);
the least recently used goes first (``LRU``). A full cache whose lookups find
(almost) nothing keeps only a sample of the new opinions until repeats come
back (``OpinionCache._update_admission``). It lives in the server process,
so a reload (new workers) starts empty, and it is shared by every call: a
chain's dependencies (``consensus`` needs ``sentiment``) hit the same cache as
direct calls. The same input twice in one call is computed once. Failures are
never cached. Hits and misses are counted in ``stats()``, in Prometheus
(``expertd_cache_lookups_total``) and in ``experts()``.

Which experts may be cached: those whose opinion is a function of their input
and their version (``Expert.pure``: the Keras experts, VADER, consensus). The
server's ``cache_size`` turns it on for those that read a field and need no
other expert (``build_caches``); another expert (one that reads
a clock, or draws at random) gets a cache only when its own entry asks for one.
A learner (``pure = False``: its opinions change as it learns) is still
correct when cached, since its model version is part of the version, but every
update empties its share of the hits, so it is off unless asked for.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any, Callable, Hashable, Iterable

#: Writes one value one way (the key of a dict input): one encoder for every key, since
#: ``json.dumps`` with arguments builds a new one per call.
_canonical_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                   allow_nan=True).encode


_MISSING = object()
_STRINGS = {str}

#: Admission (``OpinionCache.keep_every``): every ``ADMISSION_WINDOW`` lookups the cache
#: looks at the share of them it found; under ``RARE_HITS`` it keeps only one new opinion
#: in ``SAMPLED_EVERY`` (enough to notice when repeats come back), at or over it every one.
ADMISSION_WINDOW = 20_000
RARE_HITS = 0.02
SAMPLED_EVERY = 16


class LRU:
    """A mapping of at most ``size`` items; the least recently read or written goes first."""

    __slots__ = ("size", "items", "retired")

    def __init__(self, size: int) -> None:
        """Hold at most ``size`` (>= 1) items."""
        if size < 1:
            raise ValueError(f"an LRU holds at least one item, not {size}")
        self.size = size
        #: Replaced by another (a new version's): keeps nothing more.
        self.retired = False
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
        self.put_many(((key, value),))

    def put_many(self, pairs: Iterable[tuple[Hashable, Any]]) -> None:
        """Keep each ``(key, value)`` in turn as the most recently used, then drop the oldest
        beyond ``size`` (once for all of them). A ``retired`` LRU keeps nothing."""
        if self.retired:
            return
        items = self.items
        for key, value in pairs:
            if key in items:  # another call stored it meanwhile
                items.move_to_end(key)
            items[key] = value
        excess = len(items) - self.size
        if excess > 0:
            pop = items.popitem
            for _ in range(excess):
                pop(False)

    def clear(self) -> None:
        """Forget everything."""
        self.items.clear()


def input_key(value: Any) -> Hashable | None:
    """The exact input as a key: a string as is, anything else as canonical JSON (``None`` if
    JSON cannot write it). A string and the JSON of another value never collide."""
    if type(value) is str:
        return value
    try:
        return ("json", _canonical_json(value))
    except (TypeError, ValueError, RecursionError):
        return None


class OpinionCache:
    """One expert's cache of opinions, with its hit and miss counts."""

    def __init__(self, size: int, version: Callable[[], Hashable]) -> None:
        """Hold ``size`` opinions of the expert's current version (``version()``)."""
        self.size = size
        self.version = version
        #: The entries of one version (``lru_version``): keyed by the input alone, so that a
        #: lookup builds no tuple; another version starts a new LRU (the old one's entries
        #: could never be hit again).
        self.lru = LRU(size)
        self.lru_version: Hashable = _MISSING
        self.hits = 0
        self.misses = 0
        #: 1: every new opinion is kept; ``SAMPLED_EVERY``: only those whose input's hash is
        #: a multiple of it (a full cache that found few repeats lately).
        self.keep_every = 1
        self._window_lookups = 0
        self._window_found = 0

    def _lru_of(self, version: Hashable) -> LRU:
        """The LRU of ``version``: the current one, or a new, empty one if the version moved on.

        A call holds on to the LRU it looked up in; one replaced meanwhile is ``retired``
        and keeps nothing more, so a call that began under an older version neither
        stores under the new one nor keeps the old one growing."""
        if version != self.lru_version:
            if self.lru_version is not _MISSING:
                self.lru.retired = True
                self.lru = LRU(self.size)
            self.lru_version = version
        return self.lru

    def predict_through(self, values: list, predict: Callable[[list], list]) -> tuple[list, int, int]:
        """One ``(ok, opinion)`` outcome per input, in order: known ones from the cache, the
        others from ``predict(inputs)`` (each distinct input once, the new opinions kept).

        Returns ``(outcomes, hits, misses)``: misses are the inputs ``predict`` was asked
        about; hits the others (known, or repeats within this call). Whatever ``predict``
        raises (``Overloaded``) is raised, and nothing is kept.
        """
        lru = self._lru_of(self.version())  # before the model is asked: a learner's moves on
        every = self.keep_every
        if set(map(type, values)) == _STRINGS:  # a text expert's field, as it always is
            keys = values
        else:  # an input JSON cannot write gets a key of its own that nothing finds
            keys = [key if (key := input_key(value)) is not None else _Uncacheable()
                    for value in values]
        outcomes, asked, found = _through(lru, values, keys, predict, every)
        hits = len(values) - asked
        self.hits += hits
        self.misses += asked
        self._update_admission(len(values), found * every)
        return outcomes, hits, asked

    def _update_admission(self, lookups: int, found: int) -> None:
        """Count ``lookups``, of which about ``found`` were in the cache; every
        ``ADMISSION_WINDOW`` lookups, choose which new opinions to keep (``keep_every``).

        A stream without repeats pays for storing each opinion and, once the cache is
        full, for dropping the oldest (cold memory by then: 2-3.5 us a document in a busy
        server, bench/RESULTS-cache.md) and gets nothing back. So a full cache whose
        lookups found under ``RARE_HITS`` keeps only the inputs whose hash is a multiple
        of ``SAMPLED_EVERY``, and counts finds only among those (scaled up by as much),
        which stay the same inputs whatever it kept before; repeats coming back bring
        it back to keeping every one. A cache that is not full keeps everything (a
        corpus read a second time finds all of it). Repeats within one call are not
        finds."""
        self._window_lookups += lookups
        self._window_found += found
        if self._window_lookups >= ADMISSION_WINDOW:
            rare = self._window_found / self._window_lookups < RARE_HITS
            self.keep_every = SAMPLED_EVERY if rare and len(self.lru) >= self.size else 1
            self._window_lookups = self._window_found = 0

    def describe(self) -> dict:
        """``{"size", "entries", "hits", "misses", "keep_every"}`` (for ``experts()``)."""
        return {"size": self.size, "entries": len(self.lru), "hits": self.hits,
                "misses": self.misses, "keep_every": self.keep_every}


class _Uncacheable:
    """The key of an input JSON cannot write: equal only to itself, never stored."""

    __slots__ = ()


def _through(lru: LRU, values: list, keys: list, predict: Callable[[list], list],
             every: int) -> tuple[list, int, int]:
    """``predict_through`` with each input's key (``keys is values`` for texts): the lookups,
    the distinct unknown keys and the hits' move to the recent end each one pass in C
    (``map``, ``dict.fromkeys``). ``every``: keep only the new opinions whose key's hash
    is a multiple of it. Returns the outcomes, how many inputs ``predict`` was asked
    about, and how many found in the cache were of those kept."""
    items = lru.items
    found = list(map(items.get, keys))  # None: unknown (None is never stored)
    if None not in found:  # every input known
        deque(map(items.move_to_end, keys), 0)
        return [(True, _copy(opinion)) for opinion in found], 0, _kept(keys, every)
    unknown = [key for key, opinion in zip(keys, found) if opinion is None]
    known = [key for key, opinion in zip(keys, found) if opinion is not None]
    # The hits move to the recent end now, before ``predict`` lets other calls run (and
    # evict): a key found above may be gone after it.
    deque(map(items.move_to_end, known), 0)
    distinct = dict.fromkeys(unknown)  # in order, each once
    asked = list(distinct)
    if keys is values:
        computed = predict(asked)
    else:  # one input for each distinct key (equal keys: equal inputs)
        value_of = dict(zip(keys, values))
        computed = predict([value_of[key] for key in asked])
    distinct.update(zip(asked, computed))
    lru.put_many((key, _copy(opinion)) for key, (ok, opinion) in zip(asked, computed)
                 if ok and opinion is not None and type(key) is not _Uncacheable
                 and (every == 1 or hash(key) % every == 0))
    outcomes = [(True, _copy(opinion)) if opinion is not None else distinct[key]
                for key, opinion in zip(keys, found)]
    if len(asked) < len(unknown):  # an unknown input more than once: each its own copy
        given: set = set()
        for i, (key, opinion) in enumerate(zip(keys, found)):
            if opinion is None:
                if key in given:
                    ok, answer = outcomes[i]
                    outcomes[i] = (ok, _copy(answer) if ok else answer)
                else:
                    given.add(key)
    return outcomes, len(asked), _kept(known, every)


def _kept(keys: list, every: int) -> int:
    """How many of ``keys`` a cache keeping one in ``every`` (by hash) keeps."""
    return len(keys) if every == 1 else sum(1 for key in keys if hash(key) % every == 0)


def _copy(opinion: Any) -> Any:
    """A shallow copy of an opinion dict, so that no caller shares (or changes) the cached one."""
    return dict(opinion) if type(opinion) is dict else opinion


def build_caches(experts: dict, file: Any, learning: Any = None) -> dict[str, OpinionCache]:
    """The caches an experts file asks for, by expert name (experts without one are absent).

    An expert's ``cache: {size: N}`` wins; otherwise the server's ``cache_size`` goes to a
    pure expert that reads a field and needs no other expert. One that reads the whole
    document or builds on others (``consensus``) is keyed by its whole input written as
    JSON, which cost about as much as computing it (bench/RESULTS-cache.md): its
    dependencies are cached, and it is cached only when its own entry asks.
    An expert with ``versions:`` gets none (the experts file refuses its
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
        elif expert.pure and expert.field is not None and not spec.needs:
            size = file.server.cache_size
        else:
            size = 0
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
