"""The retry policy (``expertd.retry``): the spec's parameters, bounded backoff, jitter, giving up,
and the stateful-method rule; the pipe and ``ExpertsClient`` use it (Node: test/retry.test.js)."""

import pytest

from expertd import retry, spec
from expertd.retry import Backoff, Policy


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is called."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_profiles_come_from_the_spec():
    for name, entry in spec.RETRY_PROFILES.items():
        rule = retry.policy(name)
        assert (rule.base, rule.factor, rule.cap, rule.jitter) == (
            entry["base_s"], entry["factor"], entry["cap_s"], tuple(entry["jitter"]))
        assert 0 < rule.base <= rule.cap and rule.factor >= 1
        assert 0 < rule.jitter[0] <= rule.jitter[1] <= 1
    assert retry.PIPE == retry.policy("pipe") and retry.CLIENT == retry.policy("client")


def test_the_behaviour_of_before_is_kept():
    """Pipe: 50 ms doubling to 1 s; ExpertsClient: 0.2 s doubling to 2 s, 2 retries; both x[0.5, 1]."""
    assert retry.PIPE == Policy(0.05, 2, 1.0, (0.5, 1.0))
    assert retry.CLIENT == Policy(0.2, 2, 2.0, (0.5, 1.0))
    assert retry.CLIENT_RETRIES == 2


@pytest.mark.parametrize("rule", [retry.PIPE, retry.CLIENT, Policy(0.01, 3, 0.5, (0.25, 0.75))])
def test_backoff_grows_to_the_cap_and_jitter_stays_in_range(rule):
    low, high = rule.jitter
    for attempt in range(30):
        full = min(rule.base * rule.factor ** attempt, rule.cap)
        assert rule.pause(attempt, draw=lambda: 0.0) == pytest.approx(full * low)
        assert rule.pause(attempt, draw=lambda: 1.0) == pytest.approx(full * high)
        assert full * low <= rule.pause(attempt) <= full * high
    assert rule.pause(100, draw=lambda: 1.0) == pytest.approx(rule.cap * high)


def test_a_client_backoff_argument_changes_only_the_first_pause():
    rule = retry.CLIENT.with_base(0.01)
    assert [rule.pause(n, draw=lambda: 1.0) for n in range(3)] == pytest.approx([0.01, 0.02, 0.04])
    assert rule.cap == retry.CLIENT.cap


def test_backoff_gives_up_at_the_deadline_without_waiting_past_it():
    clock = FakeClock()
    backoff = Backoff(1.0, Policy(0.1, 2, 10.0, (1.0, 1.0)), clock=clock, sleep=clock.sleep)
    tries = 0
    while backoff.sleep():
        tries += 1
    assert clock.slept == pytest.approx([0.1, 0.2, 0.4])  # the next, 0.8 s, would pass 1 s
    assert tries == 3 and backoff.waited() == pytest.approx(0.7)
    assert backoff.remaining() == pytest.approx(0.3)


def test_backoff_with_no_time_never_sleeps():
    clock = FakeClock()
    assert not Backoff(0.0, clock=clock, sleep=clock.sleep).sleep()
    assert clock.slept == []


def test_the_pipe_uses_this_backoff():
    from expertd.clients.pipe import retrying

    assert retrying.Backoff is Backoff


#: (method, error name, whether it may be asked again), for both languages.
ASK_AGAIN_CASES = [
    ("opinion", "Overloaded", True), ("opinion", "RpcTimeout", True),
    ("opinion", "ServerUnavailable", True), ("opinion", "InvalidDocument", False),
    ("opinions_batch", "ShuttingDown", True), ("batch", "TooManyDocuments", False),
    ("learn", "Overloaded", True), ("learn", "ShuttingDown", True),
    ("learn", "RpcTimeout", False), ("learn", "ServerUnavailable", False),
    ("learn", "NotLearnable", False), ("learn", "LearnBacklogFull", True),
    ("learn", "LearnLimit", False),
]


def test_a_stateful_call_is_asked_again_only_after_a_refusal_before_it_ran():
    assert spec.STATEFUL_METHODS == {"learn"} | spec.ADMIN_METHODS
    assert spec.ADMIN_METHODS == {"expert_load", "expert_unload", "expert_promote", "expert_policy",
                                  "expert_rollback"}
    assert spec.REFUSED_BEFORE_RUNNING <= {n for n, k in spec.ERRORS.items() if k.retryable}
    for method, name, expected in ASK_AGAIN_CASES:
        assert retry.may_ask_again(method, name) is expected, (method, name)
