"""One big call against a real server: memory handed back after it, other callers answered during it.

The server serves ``vader`` (tests/vader_experts.yaml: no TensorFlow, fast);
the big call is one ``opinions_batch`` of ``BIG`` short documents from the
stock zerorpc client (its default 5 s heartbeat).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import zerorpc

from tests.conftest import ROOT, ServerProcess

VADER_CONFIG = Path(__file__).resolve().parents[1] / "vader_experts.yaml"
BIG = 20_000
#: Resident memory after a call may exceed the ready level by this share at most.
HELD_SHARE = 0.15


def resident_mib(pid: int) -> float:
    """``VmRSS`` of ``/proc/PID/status``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def big_documents(count: int = BIG) -> list[dict]:
    """``count`` short, distinct documents."""
    return [{"id": i, "text": f"document {i} is a rather good one, I think"} for i in range(count)]


def settled_mib(pid: int, seconds: float = 1.0) -> float:
    """Resident memory once it stopped moving (two readings ``seconds`` apart agree within 1%)."""
    last = resident_mib(pid)
    for _ in range(10):
        time.sleep(seconds)
        now = resident_mib(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def test_resident_memory_returns_near_its_ready_level_after_a_big_call(tmp_path):
    server = ServerProcess(VADER_CONFIG, tmp_path)
    pid = server.process.pid
    try:
        client = zerorpc.Client(server.endpoint, timeout=120)
        client.opinion("vader", {"text": "warm"})
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"PYTHONMALLOC=malloc" in environ  # serve re-executed itself (rpc_server/runtime.py)
        ready = settled_mib(pid)
        for _ in range(2):  # a second call must not add to what the first left
            answers = client.opinions_batch(big_documents())
            assert len(answers) == BIG and answers[-1]["opinions"]["vader"]["label"]
            del answers
            deadline = time.monotonic() + 15
            while resident_mib(pid) > ready * (1 + HELD_SHARE) and time.monotonic() < deadline:
                time.sleep(0.5)
            held = resident_mib(pid)
            print(f"ready {ready:.0f} MiB; after a {BIG}-document call {held:.0f} MiB")
            assert held <= ready * (1 + HELD_SHARE), (
                f"ready at {ready:.0f} MiB, still {held:.0f} MiB 15 s after a {BIG}-document call")
        client.close()
    finally:
        assert server.stop() == 0, server.read_log()


SIDE_CALLER = r"""
import json, sys, time, zerorpc
client = zerorpc.Client(sys.argv[1], timeout=10)  # heartbeat 5 s: LostRemote after 10 s silent
calls, errors = 0, []
print("started", flush=True)
while not sys.stdin.readline().strip() == "stop":
    try:
        assert client.health()["status"] == "ok"
        assert client.opinion("vader", {"text": "a fine day"})["label"] == "positive"
        calls += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:300])
    print("call", flush=True)
print(json.dumps({"calls": calls, "errors": errors}), flush=True)
"""


def test_other_callers_are_answered_while_a_big_call_runs(tmp_path):
    server = ServerProcess(VADER_CONFIG, tmp_path)
    side = subprocess.Popen([sys.executable, "-c", SIDE_CALLER, server.endpoint], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert side.stdout.readline().strip() == "started"
        outcome: dict = {}

        def big_call() -> None:
            client = zerorpc.Client(server.endpoint, timeout=300)  # the stock client
            try:
                outcome["answers"] = len(client.opinions_batch(big_documents(2 * BIG)))
            except Exception as exc:  # LostRemote, TimeoutExpired: asserted below
                outcome["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                client.close()

        caller = threading.Thread(target=big_call)
        caller.start()
        during = 0
        while caller.is_alive():  # one side call at a time, each asked for by a line
            side.stdin.write("go\n")
            side.stdin.flush()
            assert side.stdout.readline().strip() == "call"
            during += 1
        caller.join()
        side.stdin.write("stop\n")
        side.stdin.flush()
        report = json.loads(side.stdout.readline())
        assert outcome.get("answers") == 2 * BIG, outcome
        assert report["errors"] == [], report["errors"][:3]
        assert report["calls"] == during >= 2
    finally:
        side.kill()
        side.wait()
        assert server.stop() == 0, server.read_log()
