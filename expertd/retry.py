"""The retry policy, written once for the Python clients (the pipe stage and ``ExpertsClient``).

What is asked again: a failure whose error the spec marks ``retryable``, and
for a stateful method (``learn``) only a refusal the server gave before it
ran (``may_ask_again``). How: exponential backoff with jitter, the pause
before try n+1 being ``min(base * factor**n, cap)`` times a factor drawn
uniformly from ``jitter``; each client's parameters are a profile of the
spec's ``retry`` section. When to give up: ``Backoff`` stops at a deadline
(the pipe's ``--timeout``); ``ExpertsClient`` after ``retries`` tries.
The Node bridge applies the same file through ``express_bridge/src/retry.js``.
Light on purpose: the pipe stage imports it.
"""

from __future__ import annotations

import os
import time

from expertd.records import record  # not collections.namedtuple: the pipe stage starts faster
from expertd.spec import RETRY_PROFILES, is_retryable, may_ask_again

__all__ = ["Backoff", "Policy", "is_retryable", "may_ask_again", "policy"]


def _uniform() -> float:
    """A number in [0, 1] (``os.urandom``: ``random`` would cost the pipe stage an import)."""
    return int.from_bytes(os.urandom(2), "big") / 65535


class Policy(record("Policy", "base factor cap jitter")):
    """Backoff parameters: ``base`` seconds, growing by ``factor`` up to ``cap``, times a jitter
    factor drawn from ``jitter`` (a ``(low, high)`` tuple)."""

    __slots__ = ()

    def pause(self, attempt: int, draw=_uniform) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` 0 is the first retry)."""
        low, high = self.jitter
        return min(self.base * self.factor ** attempt, self.cap) * (low + (high - low) * draw())

    def with_base(self, base: float) -> "Policy":
        """The same policy from another first pause (``ExpertsClient``'s ``backoff`` argument)."""
        return self._replace(base=base)


def policy(profile: str) -> Policy:
    """The spec's backoff parameters for a client: ``"pipe"``, ``"client"`` or ``"bridge"``."""
    entry = RETRY_PROFILES[profile]
    return Policy(base=entry["base_s"], factor=entry["factor"], cap=entry["cap_s"],
                  jitter=(entry["jitter"][0], entry["jitter"][1]))


#: The pipe stage's policy, and ``ExpertsClient``'s (with its ``retries``).
PIPE: Policy = policy("pipe")
CLIENT: Policy = policy("client")
CLIENT_RETRIES: int = RETRY_PROFILES["client"]["retries"]


class Backoff:
    """Pauses that follow a ``Policy``, bounded by a deadline ``timeout`` seconds from now."""

    def __init__(self, timeout: float, rule: Policy = PIPE, clock=time.monotonic,
                 sleep=time.sleep) -> None:
        """Allow retries for ``timeout`` seconds from now."""
        self._clock, self._sleep = clock, sleep
        self.rule = rule
        self.started = clock()
        self.deadline = self.started + timeout
        self.attempt = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - self._clock())

    def waited(self) -> float:
        """Seconds since the first failure."""
        return self._clock() - self.started

    def sleep(self) -> bool:
        """Wait before the next try; False (without waiting) if that would pass the deadline."""
        pause = self.rule.pause(self.attempt)
        if self._clock() + pause > self.deadline:
            return False
        self._sleep(pause)
        self.attempt += 1
        return True
