"""Micro-batching with admission control: concurrent requests for one expert become
model calls, a full queue answers ``Overloaded`` at once, and one bad input fails alone.

Each expert gets a ``MicroBatcher``: a greenlet that takes queued requests and
runs the expert's ``predict`` in a native thread, so the gevent loop (and
zerorpc's heartbeats) keeps running while the model works.

* **Admission.** The queue holds at most ``max_queued_docs`` documents not yet
  started; a request that does not fit is refused with ``Overloaded`` at once.
  A request that waited longer than ``budget_ms`` before its first model call,
  or whose caller's deadline passed, is answered ``Overloaded`` and never
  computed; a request whose caller went away (its greenlet was killed) is dropped.
* **Fair batching.** A model call takes either the small requests waiting
  (FIFO, up to ``max_size`` inputs) or one chunk of the oldest large request,
  which then goes to the back of the line; while both wait, the two kinds
  take turns. A chunk is sized to take about ``chunk_ms`` (measured from the
  expert's recent calls, between ``max_size`` and ``chunk_size`` inputs), so a
  one-document call waits for at most about one short chunk, never for a
  100,000-document batch, and is never computed together with one. A request
  of up to ``chunk_size`` inputs is one model call (the model is fastest on
  big calls), so that is the longest a one-document call waits.
* **Isolation.** A model call that raises is split in halves until the failing
  inputs are found, so a poison input fails only itself; each output is
  checked (``outputs.opinion_problem``) and a bad one fails only its input.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Sequence

import gevent
from gevent.event import AsyncResult, Event
from gevent.threadpool import ThreadPool

from expertd import tracing
from expertd.experts.base import Expert
from expertd.rpc_server.errors import ExpertFailed, Overloaded, ShuttingDown, TooManyDocuments
from expertd.rpc_server.logsafe import without_paths
from expertd.rpc_server.outputs import opinion_checker

log = logging.getLogger("expertd.batching")

#: Most inputs of one large request given to one model call.
DEFAULT_CHUNK = 1024
#: How long a chunk of a large request should take in the model (its size follows):
#: about what a one-document call may wait; 5 ms cost a stream ~35% of its rate.
DEFAULT_CHUNK_MS = 10.0
#: Weight of the newest call in the running estimate of the model's seconds per input.
_SMOOTHING = 0.5
#: Defaults of an expert's ``queue:`` settings.
DEFAULT_MAX_QUEUED_DOCS = 200_000
DEFAULT_BUDGET_MS = 1000.0
#: Longest expert failure message passed on to a caller.
MESSAGE_LIMIT = 300

#: One input's outcome: ``(True, opinion)`` or ``(False, error)``.
Outcome = tuple


class _Request:
    __slots__ = ("values", "outcomes", "taken", "unanswered", "enqueued", "deadline",
                 "result", "cancelled", "trace", "links", "waiting", "taken_ns")

    def __init__(self, values: list, deadline: float | None, trace=None, waiting=tracing.NO_SPAN,
                 links: tuple = ()) -> None:
        self.values = values
        self.outcomes: list = [None] * len(values)
        self.taken = 0               # inputs handed to model calls so far
        self.unanswered = len(values)
        self.enqueued = time.monotonic()
        self.deadline = deadline     # time.monotonic() by which the caller wants an answer
        self.result = AsyncResult()
        self.cancelled = False
        self.trace = trace           # the caller's span context (``TraceParent``), when traced
        self.links = links           # the requests its call serves (a coalesced call's), when traced
        self.waiting = waiting       # its queue-wait span (``tracing.NO_SPAN`` when not traced)
        self.taken_ns = None         # when its first input was handed to a model call

    @property
    def remaining(self) -> int:
        return len(self.values) - self.taken


class MicroBatcher:
    """Groups requests for one expert, admits what it can finish, runs it off the event loop."""

    def __init__(self, expert: Expert, pool: ThreadPool, max_size: int = 64,
                 max_wait_ms: float = 0.0, on_batch=None, *, on_shed=None,
                 max_queued_docs: int = DEFAULT_MAX_QUEUED_DOCS,
                 budget_ms: float = DEFAULT_BUDGET_MS, chunk_size: int = DEFAULT_CHUNK,
                 chunk_ms: float = DEFAULT_CHUNK_MS) -> None:
        """``on_batch(expert_name, size, seconds)`` is called after each model call,
        ``on_shed(expert_name)`` for each request answered ``Overloaded``."""
        self.expert = expert
        self.pool = pool
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued_docs = max_queued_docs
        self.budget = budget_ms / 1000.0
        self.chunk_size = max(chunk_size, max_size)
        self.chunk_seconds = chunk_ms / 1000.0
        self._seconds_per_input: float | None = None  # measured on calls of >= max_size inputs
        self._small_turn = True      # whether small requests go next when both kinds wait
        self.on_batch = on_batch
        self.on_shed = on_shed
        self.schema = getattr(expert, "opinion_schema", None)
        try:  #: ``opinion -> problem or None``: the expert's schema, compiled once
            self.check_opinion = opinion_checker(self.schema)
        except ValueError as exc:
            raise ValueError(f"expert {expert.name!r}: {exc}") from None
        self.queued_docs = 0
        self.shed = 0                # requests answered Overloaded
        self._queue: deque[_Request] = deque()
        self._wakeup = Event()
        self._closed = False
        self._worker = gevent.spawn(self._run)

    # -- what callers use -----------------------------------------------------

    def settings(self) -> dict:
        """The batching and queue settings, as ``experts()`` reports them."""
        return {"max_size": self.max_size, "max_wait_ms": self.max_wait * 1000.0,
                "chunk_size": self.chunk_size, "chunk_ms": self.chunk_seconds * 1000.0,
                "queue": {"max_docs": self.max_queued_docs, "budget_ms": self.budget * 1000.0}}

    def predict_each(self, values: Sequence[Any], deadline: float | None = None,
                     trace=None, links: tuple = ()) -> list[Outcome]:
        """One outcome per value, in order (blocks this greenlet only).

        ``trace``: the caller's span context; when tracing is on, the wait in
        the queue is a span under it, and the model call that serves it links to
        it and to ``links`` (the requests a coalesced call serves).

        Raises ``Overloaded`` when the request cannot be admitted or could not
        start in time, ``TooManyDocuments`` when it could never fit.
        """
        values = list(values)
        if not values:
            return []
        if self._closed:
            raise ShuttingDown("the server is shutting down; retry after it restarts")
        name = self.expert.name
        if len(values) > self.max_queued_docs:
            raise TooManyDocuments(f"{len(values)} documents for expert {name!r} is more than its "
                                   f"queue holds (max_docs {self.max_queued_docs}); split the call")
        if self.queued_docs + len(values) > self.max_queued_docs:
            self._shed()
            raise Overloaded(f"expert {name!r} has {self.queued_docs} documents queued "
                             f"(max_docs {self.max_queued_docs}); retry after a short backoff")
        if deadline is not None and deadline <= time.monotonic():
            self._shed()
            raise Overloaded(f"the caller's deadline passed before expert {name!r} could start")
        request = _Request(values, deadline, trace,
                           tracing.span(f"queue wait {name}", trace, attributes={
                               "expertd.expert": name, "expertd.version": self.expert.version,
                               "expertd.inputs": len(values),
                               "expertd.queued_docs": self.queued_docs})
                           if trace is not None and tracing.records(trace) else tracing.NO_SPAN,
                           links)
        self._queue.append(request)
        self.queued_docs += len(values)
        self._wakeup.set()
        try:
            return request.result.get()
        except BaseException as exc:
            self._cancel(request)
            if request.taken_ns is None:
                request.waiting.fail(type(exc).__name__, str(exc))
                request.waiting.end()
            raise

    def close(self) -> None:
        """Stop the batching greenlet; queued requests are answered ``ShuttingDown``."""
        self._closed = True
        self._worker.kill()
        while self._queue:
            request = self._queue.popleft()
            if not request.result.ready():
                request.result.set_exception(ShuttingDown("the server is shutting down"))

    # -- the batching greenlet ------------------------------------------------

    def _cancel(self, request: _Request) -> None:
        """The caller went away: forget what of its request has not started."""
        if request.cancelled:
            return
        request.cancelled = True
        if request in self._queue:
            self._queue.remove(request)
            self.queued_docs -= request.remaining
            request.taken = len(request.values)

    def _shed(self) -> None:
        self.shed += 1
        if self.on_shed is not None:
            self.on_shed(self.expert.name)

    def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                self._wakeup.wait()
            if self.max_wait > 0:
                self._wait_for_more()
            self._serve_safely(self._take())

    def _serve_safely(self, parts: list[tuple[_Request, int, int]]) -> None:
        """``_serve`` whose failure answers its requests ``ExpertFailed``.

        A method of its own so that nothing of a served request (its documents,
        its answers) stays referenced by ``_run`` while the batcher waits: the
        last call of each expert used to stay alive until the next one (40,000
        documents to vader held 40 MiB; a 100,000-document call over every
        expert, about 350 MiB).
        """
        if not parts:
            return
        try:
            self._serve(parts)
        except gevent.GreenletExit:
            raise
        except BaseException as exc:  # never let the batcher die
            log.exception("batcher of %s failed", self.expert.name)
            for request, _, _ in parts:
                if not request.result.ready():
                    request.result.set_exception(ExpertFailed(
                        f"expert {self.expert.name!r} failed: {type(exc).__name__}"))

    def _wait_for_more(self) -> None:
        deadline = time.monotonic() + self.max_wait
        while sum(r.remaining for r in self._queue) < self.max_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            if not self._wakeup.wait(remaining):
                return

    def _expire(self, now: float) -> None:
        """Answer ``Overloaded`` to requests that waited too long or whose caller gave up."""
        name = self.expert.name
        for request in list(self._queue):
            waited = now - request.enqueued
            if request.taken == 0 and waited > self.budget:
                why = (f"waited {waited * 1000:.0f} ms in the queue of expert {name!r}, over its "
                       f"budget of {self.budget * 1000:.0f} ms; not computed, retry after a backoff")
            elif request.deadline is not None and now >= request.deadline:
                why = (f"the caller's deadline passed while waiting for expert {name!r}; "
                       f"not computed")
            else:
                continue
            self._queue.remove(request)
            self.queued_docs -= request.remaining
            request.taken = len(request.values)
            self._shed()
            if not request.result.ready():
                request.result.set_exception(Overloaded(why))

    def chunk(self) -> int:
        """Inputs of a large request for its next model call (about ``chunk_ms`` of work)."""
        if not self._seconds_per_input:
            return self.max_size
        fitting = int(self.chunk_seconds / self._seconds_per_input)
        return max(self.max_size, min(self.chunk_size, fitting))

    def _take(self) -> list[tuple[_Request, int, int]]:
        """The inputs of the next model call: ``(request, start, end)`` slices.

        Either every small request that fits (oldest first) or one chunk of the
        oldest large request; when both kinds wait they take turns.
        """
        self._expire(time.monotonic())
        if not self._queue:
            return []
        small = sum(1 for request in self._queue if request.remaining <= self.max_size)
        if small and (self._small_turn or small == len(self._queue)):
            self._small_turn = False
            return self._take_small()
        self._small_turn = True
        request = next(r for r in self._queue if r.remaining > self.max_size)
        # A request of up to chunk_size inputs is one model call, as it always
        # was (cutting 1,000 documents into ~10 ms chunks cost batch() 30% of its
        # throughput); only larger ones are served ~chunk_ms at a time.
        whole = request.taken == 0 and len(request.values) <= self.chunk_size
        take = request.remaining if whole else min(request.remaining, self.chunk())
        part = (request, request.taken, request.taken + take)
        if request.taken_ns is None:
            request.taken_ns = time.time_ns()
        request.taken += take
        self.queued_docs -= take
        self._queue.remove(request)
        if request.remaining:
            self._queue.append(request)  # to the back of the line
        return [part]

    def _take_small(self) -> list[tuple[_Request, int, int]]:
        parts: list[tuple[_Request, int, int]] = []
        size = 0
        for request in list(self._queue):
            if request.remaining <= self.max_size - size:
                parts.append((request, request.taken, len(request.values)))
                if request.taken_ns is None:
                    request.taken_ns = time.time_ns()
                size += request.remaining
                self.queued_docs -= request.remaining
                request.taken = len(request.values)
                self._queue.remove(request)
            if size >= self.max_size:
                break
        return parts

    def _serve(self, parts: list[tuple[_Request, int, int]]) -> None:
        values = [v for request, start, end in parts for v in request.values[start:end]]
        # The requests whose traces are recorded (none when tracing is off or none was sampled).
        traced = [request for request, _, _ in parts
                  if request.trace is not None and tracing.records(request.trace)]
        if traced:
            with self._model_span(traced, len(values)) as span:
                outcomes = self._isolate(values)
                failed = [o[1] for o in outcomes if not o[0]]
                span.set(**{"expertd.failed": len(failed)})
                if failed:
                    span.fail(type(failed[0]).__name__, str(failed[0]))
                self._model_context = None
        else:
            outcomes = self._isolate(values)
        offset = 0
        for request, start, end in parts:
            count = end - start
            request.outcomes[start:end] = outcomes[offset:offset + count]
            offset += count
            request.unanswered -= count
            if request.unanswered == 0 and not request.result.ready():
                request.result.set(request.outcomes)

    _model_context = None  # the span context of the model call being served, when traced

    def _model_span(self, traced: list[_Request], size: int):
        """The span of one model call, under its first traced request, linked to each it serves.

        Each request's queue-wait span ends (when it was taken) linked to it.
        """
        span = tracing.span(f"model {self.expert.name}", traced[0].trace,
                            links=[link for request in traced for link in (request.trace, *request.links)],
                            attributes={"expertd.expert": self.expert.name,
                                        "expertd.version": self.expert.version, "expertd.batch_size": size,
                                        "expertd.requests": len(traced)})
        self._model_context = span.context
        for request in traced:
            if request.waiting.recording:
                request.waiting.link(span.context)
                request.waiting.end(request.taken_ns)
                request.waiting = tracing.NO_SPAN
        return span

    def _isolate(self, values: list) -> list[Outcome]:
        """Outcomes of ``values``; a failing call is split until the failing inputs are found."""
        try:
            return self._call_model(values)
        except Exception as exc:
            if len(values) == 1:
                return [(False, self._failure(exc))]
        middle = len(values) // 2
        return self._isolate(values[:middle]) + self._isolate(values[middle:])

    def _failure(self, exc: BaseException) -> ExpertFailed:
        message = str(exc)
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + "..."
        log.warning("expert %s failed on an input: %s: %s", self.expert.name,
                    type(exc).__name__, message.encode("unicode_escape").decode("ascii"))
        return ExpertFailed(f"expert {self.expert.name!r} failed: {type(exc).__name__}: "
                            f"{without_paths(message)}")

    def _call_model(self, values: list) -> list[Outcome]:
        began = time.perf_counter()
        failure, outcomes, checks = self.pool.spawn(self._predict_checked, values).get()
        seconds = time.perf_counter() - began
        if self._model_context is not None and checks is not None:
            tracing.span(f"output checks {self.expert.name}", self._model_context, start_ns=checks[0],
                         attributes={"expertd.outputs": len(values),
                                     "expertd.refused": sum(1 for ok, _ in outcomes if not ok)}
                         ).end(checks[1])
        if failure is None and len(values) >= self.max_size:
            per_input = seconds / len(values)
            previous = self._seconds_per_input
            self._seconds_per_input = per_input if previous is None else \
                previous + _SMOOTHING * (per_input - previous)
        if self.on_batch is not None:
            self.on_batch(self.expert.name, len(values), seconds)
        if failure is not None:
            raise failure
        return outcomes

    def _predict_checked(self, values: list) -> tuple[Exception | None, list[Outcome], tuple | None]:
        """Run in a native thread: the model call, then a check of every output.

        An exception is returned, not raised, so that gevent's thread pool does
        not print a traceback for every expected failure (each bisection step).
        The third item: when the output checks began and ended (``time.time_ns()``).
        """
        timing: list = []
        try:
            return None, self._predict_outcomes(values, timing), tuple(timing) or None
        except Exception as exc:
            return exc, [], None

    def _predict_outcomes(self, values: list, timing: list) -> list[Outcome]:
        result = list(self.expert.predict(values))
        if len(result) != len(values):
            raise ValueError(f"returned {len(result)} opinions for {len(values)} inputs")
        timing.append(time.time_ns())
        outcomes = []
        for opinion in result:
            problem = self.check_opinion(opinion)
            if problem is None:
                outcomes.append((True, opinion))
            else:
                outcomes.append((False, ExpertFailed(f"expert {self.expert.name!r} returned {problem}")))
        timing.append(time.time_ns())
        return outcomes
