"""``expertd.control`` on real processes: stop, escalate, reload, the autostart lock and log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from expertd import control
from expertd.clients.probe import health_probe

PY = sys.executable


def sleeper(*code: str) -> subprocess.Popen:
    """A Python child that runs ``code``, then sleeps (once it said ``ready``, unless ``code`` speaks)."""
    speaks = any("print(" in line for line in code)
    body = "\n".join([*code, *([] if speaks else ["print('ready', flush=True)"]), "import time",
                      "time.sleep(60)"])
    child = subprocess.Popen([PY, "-c", body], stdout=subprocess.PIPE, text=True)
    if not speaks:
        assert child.stdout.readline().strip() == "ready"
    return child


def test_terminate_stops_with_sigterm():
    child = sleeper()
    try:
        began = time.monotonic()
        assert control.terminate([child.pid], 10.0) == []
        assert time.monotonic() - began < 5
        assert child.wait(5) == -signal.SIGTERM
    finally:
        child.kill()


def test_terminate_escalates_to_sigkill_after_the_timeout():
    child = sleeper("import signal", "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    told = []
    try:
        assert control.terminate([child.pid], 0.5, on_kill=told.append) == [child.pid]
        assert told == [child.pid]
        assert child.wait(5) == -signal.SIGKILL
    finally:
        child.kill()


def test_local_pid_refuses_what_it_must_not_signal():
    child = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(control.ControlError, match="did not report its pid"):
            control.local_pid(control.Server("tcp://127.0.0.1:4242", {}))
        with pytest.raises(control.ControlError, match="not on this machine"):
            control.local_pid(control.Server("tcp://192.0.2.1:4242", {"pid": child.pid}))
        with pytest.raises(control.ControlError, match="not an expertd process here"):
            control.local_pid(control.Server("tcp://127.0.0.1:4242", {"pid": child.pid}))
    finally:
        child.kill()
        child.wait()


def test_reload_signals_the_supervisor_of_the_worker_that_answered():
    supervisor = sleeper(
        "import signal, subprocess, sys",
        "signal.signal(signal.SIGHUP, lambda *_: print('reload', flush=True))",
        "worker = subprocess.Popen(['sleep', '60'])",
        "print('worker', worker.pid, flush=True)")
    worker = int(supervisor.stdout.readline().split()[1])
    try:
        with pytest.raises(control.ControlError, match="without --workers"):
            control.reload(control.Server("tcp://127.0.0.1:4242", {"pid": worker}))
        with pytest.raises(control.ControlError, match="does not run on this machine"):
            control.reload(control.Server("tcp://127.0.0.1:4242",
                                          {"pid": os.getpid(), "supervisor_pid": supervisor.pid}))
        server = control.Server("tcp://127.0.0.1:4242",
                                {"pid": worker, "supervisor_pid": supervisor.pid})
        assert control.reload(server) == supervisor.pid
        assert supervisor.stdout.readline().strip() == "reload"
    finally:
        os.kill(worker, signal.SIGKILL)
        supervisor.kill()
        supervisor.wait()


def test_autostart_lock_is_held_by_one_process_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    endpoint = "tcp://127.0.0.1:4242"
    other = [PY, "-c", "import sys; from expertd import control; "
             f"print(control.AutostartLock({endpoint!r}).try_acquire())"]
    lock = control.AutostartLock(endpoint)
    assert lock.try_acquire() and lock.held
    assert lock.path.startswith(str(tmp_path / "expertd"))
    run = dict(capture_output=True, text=True, check=True, env=dict(os.environ))
    assert subprocess.run(other, **run).stdout.strip() == "False"
    lock.release()
    assert not lock.held
    assert subprocess.run(other, **run).stdout.strip() == "True"


def test_start_detached_logs_and_its_tail_is_this_start_only(tmp_path):
    log = str(tmp_path / "state" / "server.log")
    first = control.start_detached([PY, "-c", "print('first run')"], log)
    first.process.wait(10)
    second = control.start_detached([PY, "-c", "print('second'); raise SystemExit(4)"], log)
    second.process.wait(10)
    assert second.exit_status() == 4 and first.exit_status() == 0
    assert second.log_tail(20) == ["second"]
    assert first.log_tail(20) == ["first run", "second"]
    detached = control.start_detached(["sleep", "60"], log)
    try:
        assert os.getsid(detached.process.pid) == detached.process.pid  # its own session
        assert detached.exit_status() is None
    finally:
        detached.process.kill()
        detached.process.wait()


def test_find_server_with_the_clients_probe_when_nobody_answers():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(control.NoAnswer, match="cannot connect"):
        control.find_server(f"tcp://127.0.0.1:{port}", health_probe, 1.0)


def test_is_local():
    for endpoint in ("tcp://127.0.0.1:4242", "tcp://localhost:1", "tcp://*:4242", "ipc:///tmp/x"):
        assert control.is_local(endpoint), endpoint
    assert not control.is_local("tcp://192.0.2.1:4242")
