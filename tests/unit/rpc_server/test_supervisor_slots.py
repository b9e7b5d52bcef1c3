"""The supervisor's restart bookkeeping: each worker place's events, in every order.

``Slot`` is driven directly (its events are plain calls); then a real in-process
``Supervisor`` over tiny real worker processes (no TensorFlow, no experts) is
driven through the order that used to leave a restart pending forever.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import pytest

from expertd.rpc_server.supervisor import (FIRST_BACKOFF_S, MAX_BACKOFF_S, STABLE_AFTER_S,
                                           Slot, Supervisor, Worker)

VADER_CONFIG = Path(__file__).resolve().parents[2] / "vader_experts.yaml"


def worker(index: int = 0, started: float = 0.0) -> Worker:
    """A worker record without a process: a slot reads only its start time."""
    return Worker(index, process=None, ready_r=-1, started=started)


def check(slot: Slot) -> None:
    """What holds in every state: a pending restart only while no worker holds the place."""
    assert not (slot.worker is not None and slot.restart_at is not None)
    assert slot.state in {"serving", "restarting", "empty"}
    assert (slot.wake_at() is not None) == (slot.state == "restarting")


EVENTS = ("old exits", "replacement ready", "restart time passes", "replacement exits")


@pytest.mark.parametrize("order", list(itertools.permutations(EVENTS)), ids=" / ".join)
def test_every_order_of_events_leaves_one_worker_and_no_stale_restart(order):
    now = 100.0
    old, replacement = worker(started=now), worker(started=now)
    slot = Slot(0)
    assert slot.state == "empty" and slot.fill(old) is None
    spawned: list[Worker] = []
    for event in order:
        if event == "old exits":
            slot.worker_exited(old, now)
        elif event == "replacement ready":
            displaced = slot.fill(replacement)
            assert displaced in (old, None, *spawned)  # the supervisor retires it
        elif event == "replacement exits":
            slot.worker_exited(replacement, now)  # an event for a worker not (yet) there is stale
        else:
            now += MAX_BACKOFF_S
            if slot.due(now):  # the supervisor's tick
                spawned.append(worker(started=now))
                slot.fill(spawned[-1])
        check(slot)
    now += MAX_BACKOFF_S
    if slot.due(now):
        slot.fill(worker(started=now))
    assert slot.state == "serving" and slot.wake_at() is None  # nothing left to wake up for


def test_a_replacement_that_gets_ready_as_the_old_worker_dies_cancels_its_restart():
    old, replacement = worker(), worker()
    slot = Slot(0)
    slot.fill(old)
    assert slot.worker_exited(old, 1.0) == FIRST_BACKOFF_S
    assert slot.state == "restarting" and slot.wake_at() == 1.0 + FIRST_BACKOFF_S
    assert slot.fill(replacement) is None  # nothing to retire: the old one is gone
    assert slot.state == "serving" and slot.wake_at() is None
    assert not slot.due(1e9)


def test_restarts_back_off_and_a_stable_worker_resets_the_backoff():
    slot = Slot(0)
    delays = []
    for _ in range(10):
        current = worker(started=0.0)
        slot.fill(current)
        delays.append(slot.worker_exited(current, 1.0))
    assert delays[:3] == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S]
    assert delays[-1] == MAX_BACKOFF_S
    stable = worker(started=0.0)
    slot.fill(stable)
    assert slot.worker_exited(stable, STABLE_AFTER_S) == FIRST_BACKOFF_S


def test_while_stopping_an_exit_schedules_nothing():
    current = worker()
    slot = Slot(0)
    slot.fill(current)
    assert slot.worker_exited(current, 1.0, restart=False) is None
    assert slot.state == "empty" and slot.wake_at() is None and not slot.due(1e9)


# A worker that says ready at once; a reload's replacement (it has a steering index)
# first kills -9 the worker it replaces and waits until it is dead (a zombie of the
# supervisor), so the supervisor's next look sees both events together.
FAKE_WORKER = r"""
import os, signal, time
index = os.environ["EXPERTD_WORKER_INDEX"]
pids = os.environ["FAKE_WORKER_PIDS"]
mine = os.path.join(pids, index)
if "EXPERTD_STEER_INDEX" in os.environ and os.path.exists(mine):
    old = int(open(mine).read())
    os.kill(old, signal.SIGKILL)
    while open(f"/proc/{old}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
open(mine, "w").write(str(os.getpid()))
fd = int(os.environ["EXPERTD_READY_FD"])
os.write(fd, b'{"versions": {"fake": "1"}}\n')
os.close(fd)
time.sleep(120)
"""


def test_a_supervisor_whose_old_worker_dies_as_its_replacement_says_ready_stays_idle(
        tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_WORKER_PIDS", str(tmp_path))
    supervisor = Supervisor([sys.executable, "-c", FAKE_WORKER], 2, VADER_CONFIG,
                            drain_timeout=5.0, start_timeout=60.0)
    try:
        assert supervisor.start()
        first = {i: int((tmp_path / str(i)).read_text()) for i in range(2)}
        supervisor.reload()
        assert all(slot.state == "serving" for slot in supervisor.slots.values())
        now_serving = {w.pid for w in supervisor.serving()}
        assert len(now_serving) == 2 and not now_serving & set(first.values())
        assert supervisor._next_timeout(1.0) == 1.0  # no restart pending: the loop may sleep
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < 1.5:  # what run() does while idle
            supervisor.tick(supervisor._next_timeout(1.0))
            ticks += 1
        assert ticks <= 3, f"{ticks} ticks in 1.5 s: the supervisor spins"
        assert {w.pid for w in supervisor.serving()} == now_serving  # nothing restarted
    finally:
        supervisor.stop_reason = "test over"
        supervisor.stop()
    for pid in (*first.values(), *now_serving):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
