"""``--autostart`` watches the server it starts, and concurrent stages start one server."""

from __future__ import annotations

import json
import os
import subprocess
import time

from expertd.clients.wire import Connection
from tests.conftest import BIN, ROOT, free_port

EXPERTD = str(BIN / "expertd")


def stage_env(tmp_path) -> dict:
    """A stage environment with its own state directory (log, lock)."""
    return dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), PYTHONPATH=str(ROOT),
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def test_autostarted_server_that_dies_shows_its_log_and_exits_3(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  broken: no_such_module_anywhere:Expert\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stdin = b'{"text": "a"}\n{"text": "b"}\n'
    began = time.monotonic()
    out = subprocess.run([EXPERTD, "pipe", "--endpoint", endpoint, "--autostart", "--config",
                          str(config), "broken"], input=stdin, capture_output=True,
                         env=stage_env(tmp_path), timeout=200)
    took = time.monotonic() - began
    assert out.returncode == 3
    assert out.stdout == stdin
    err = out.stderr.decode()
    assert "exited with status" in err and "no_such_module_anywhere" in err, err
    assert "Traceback" not in err.split("end of its log")[0]
    # Before, the stage waited out --autostart's 180 s in silence.
    assert took < 120, took


def test_concurrent_autostarts_start_one_server(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  vader: expertd.experts.vader:VaderExpert\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = stage_env(tmp_path)
    stages = [subprocess.Popen([EXPERTD, "pipe", "--endpoint", endpoint, "--autostart",
                                "--config", str(config), "vader"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
              for _ in range(3)]
    try:
        for i, stage in enumerate(stages):  # all of them at once: each looks for a server
            stage.stdin.write(json.dumps({"text": f"nice {i}"}).encode())
            stage.stdin.close()
        results = [(stage.stdout.read(), stage.stderr.read()) for stage in stages]
        for stage in stages:
            stage.wait(200)
        for stage, (out, err) in zip(stages, results):
            assert stage.returncode == 0, err
            assert json.loads(out)["opinions"]["vader"]["label"] == "positive"
        started = [err for _, err in results if b"started `" in err]
        assert len(started) == 1, [err for _, err in results]
        log = (tmp_path / "state" / "expertd" / "server.log").read_text()
        assert log.count("serving 1 experts") == 1 and "Address already in use" not in log
    finally:
        for stage in stages:
            stage.kill()
        with Connection(endpoint, timeout=10) as connection:
            pid = connection.call("health")["pid"]
        os.kill(pid, 15)
