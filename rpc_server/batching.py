"""Micro-batching: concurrent requests for one expert become one model call.

Each expert gets a ``MicroBatcher``: a greenlet that takes queued requests,
groups them (up to ``max_size`` inputs, waiting at most ``max_wait_ms`` for
more once the queue is empty) and runs the expert's ``predict`` in a native
thread, so the gevent loop (and zerorpc's heartbeats) keeps running while the
model works. Requests that arrive during a model call form the next batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import gevent
import gevent.queue
from gevent.event import AsyncResult
from gevent.threadpool import ThreadPool

from experts.base import Expert
from rpc_server.errors import ExpertFailed

log = logging.getLogger("expertd.batching")

#: A single request larger than this is cut into model calls of this size.
MAX_CHUNK = 1024


class _Request:
    __slots__ = ("values", "result")

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = values
        self.result = AsyncResult()


class MicroBatcher:
    """Groups requests for one expert and runs them off the event loop."""

    def __init__(self, expert: Expert, pool: ThreadPool, max_size: int = 64,
                 max_wait_ms: float = 0.0, on_batch=None) -> None:
        """``on_batch(expert_name, size, seconds)`` is called after each model call."""
        self.expert = expert
        self.pool = pool
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: gevent.queue.Queue = gevent.queue.Queue()
        self._worker = gevent.spawn(self._run)

    def predict(self, values: Sequence[Any]) -> list[dict]:
        """Opinions for ``values``, in order (blocks this greenlet only)."""
        request = _Request(list(values))
        self._queue.put(request)
        return request.result.get()

    def close(self) -> None:
        """Stop the batching greenlet (queued requests are failed)."""
        self._worker.kill()
        while not self._queue.empty():
            self._queue.get().result.set_exception(ExpertFailed("server is closing"))

    def _collect(self) -> list[_Request]:
        batch = [self._queue.get()]
        size = len(batch[0].values)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_size:
            if not self._queue.empty():
                nxt = self._queue.peek()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._queue.peek(timeout=remaining)
                except gevent.queue.Empty:
                    break
            if size + len(nxt.values) > self.max_size:
                break
            batch.append(self._queue.get())
            size += len(nxt.values)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._collect()
            try:
                self._serve(batch)
            except gevent.GreenletExit:
                raise
            except BaseException as exc:  # never let the batcher die
                for request in batch:
                    if not request.result.ready():
                        request.result.set_exception(exc)

    def _serve(self, batch: list[_Request]) -> None:
        values = [v for request in batch for v in request.values]
        try:
            outputs = self._call_model(values)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].result.set_exception(exc)
                return
            # One request may have poisoned the batch: give each its own call.
            for request in batch:
                try:
                    request.result.set(self._call_model(request.values))
                except Exception as single_exc:
                    request.result.set_exception(single_exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.values)
            request.result.set(outputs[start:end])
            start = end

    def _call_model(self, values: list) -> list[dict]:
        outputs: list[dict] = []
        step = max(MAX_CHUNK, self.max_size)
        for start in range(0, len(values), step):
            chunk = values[start:start + step]
            began = time.perf_counter()
            try:
                result = self.pool.spawn(self.expert.predict, chunk).get()
            except Exception as exc:
                raise ExpertFailed(
                    f"expert {self.expert.name!r} failed: {type(exc).__name__}: {exc}") from exc
            if self.on_batch is not None:
                self.on_batch(self.expert.name, len(chunk), time.perf_counter() - began)
            result = list(result)
            if len(result) != len(chunk):
                raise ExpertFailed(f"expert {self.expert.name!r} returned {len(result)} "
                                   f"opinions for {len(chunk)} inputs")
            outputs.extend(result)
        return outputs
