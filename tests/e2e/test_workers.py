"""``expertd serve --workers N``: real supervisor and worker processes on one port.

No TensorFlow: the workers serve ``vader`` (tests/vader_experts.yaml, or a
copy under tmp_path when the test rewrites it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zerorpc

from tests.conftest import EXPERTD, ROOT, ServerProcess, free_port, wait_for

VADER_CONFIG = Path(__file__).resolve().parents[1] / "vader_experts.yaml"


def health_over_fresh_connection(endpoint: str) -> dict:
    """``health()`` through a new stock zerorpc client (so the kernel picks a worker)."""
    client = zerorpc.Client(endpoint, timeout=10, heartbeat=None)
    try:
        return client.health()
    finally:
        client.close()


def worker_pids(endpoint: str, want: int, tries: int = 200) -> dict[int, dict]:
    """``{pid: health}`` of the workers seen over fresh connections, once ``want`` were seen."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        health = health_over_fresh_connection(endpoint)
        seen[health["pid"]] = health
        if len(seen) >= want:
            break
    return seen


class Supervised(ServerProcess):
    """``expertd serve --workers N``, ready once the supervisor says every worker serves."""

    def __init__(self, config: Path, tmp: Path, workers: int = 2, *extra: str) -> None:
        """Start it and wait for "N workers serving" in its log."""
        super().__init__(config, tmp, "--workers", str(workers), *extra)
        wait_for(lambda: "workers serving" in self.read_log(), 120, "every worker ready")

    def supervisor_pid(self) -> int:
        """The pid of the supervisor (the process the test started)."""
        return self.process.pid


def vader_config(tmp_path: Path, version: str, expert: str = "expertd.experts.vader:VaderExpert") -> Path:
    """A one-expert experts file with ``version`` (rewritten in place by reload tests)."""
    path = tmp_path / "experts.yaml"
    path.write_text(f"experts:\n  vader:\n    expert: {expert}\n"
                    f"    options: {{version: \"{version}\"}}\n")
    return path


def test_fresh_connections_are_answered_by_different_worker_pids(tmp_path):
    server = Supervised(VADER_CONFIG, tmp_path, 2)
    try:
        seen = worker_pids(server.endpoint, 2)
        assert len(seen) == 2, f"every fresh connection went to one worker: {seen}"
        assert {h["worker"] for h in seen.values()} == {0, 1}
        assert {h["workers"] for h in seen.values()} == {2}  # so a client knows how many to reach
        assert {h["supervisor_pid"] for h in seen.values()} == {server.supervisor_pid()}
        assert server.supervisor_pid() not in seen
        for health in seen.values():
            assert health["versions"] == {"vader": "1"}
        share = str(max(1, len(os.sched_getaffinity(0)) // 2))
        sized = any(key.startswith("TF_NUM_") for key in os.environ)  # the user's sizes win
        for pid in ([] if sized else seen):  # each worker's share of the cores for TensorFlow
            environ = dict(item.split("=", 1) for item in
                           Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
            assert environ["TF_NUM_INTRAOP_THREADS"] == share
            assert int(environ["TF_NUM_INTEROP_THREADS"]) >= 2
        answer = zerorpc.Client(server.endpoint, timeout=10).opinion("vader", {"text": "great"})
        assert answer["label"] == "positive"
    finally:
        assert server.stop() == 0, server.read_log()
    log = server.read_log()
    assert "draining 2 workers" in log and "all workers stopped" in log
    for pid in seen:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_model_thread_pools_share_the_cores_unless_the_user_sized_them():
    from expertd.rpc_server.model_threads import model_threads_env

    assert model_threads_env(2, {}, cpus=2) == {"TF_NUM_INTRAOP_THREADS": "1",
                                                 "TF_NUM_INTEROP_THREADS": "2"}
    assert model_threads_env(2, {}, cpus=8) == {"TF_NUM_INTRAOP_THREADS": "4",
                                                 "TF_NUM_INTEROP_THREADS": "4"}
    assert model_threads_env(4, {}, cpus=2)["TF_NUM_INTRAOP_THREADS"] == "1"
    # one process leaves its serving loop a core
    assert model_threads_env(1, {}, cpus=2) == {"TF_NUM_INTRAOP_THREADS": "1",
                                                "TF_NUM_INTEROP_THREADS": "2"}
    assert model_threads_env(1, {}, cpus=8)["TF_NUM_INTRAOP_THREADS"] == "7"
    assert model_threads_env(1, {}, cpus=1)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert model_threads_env(2, {"TF_NUM_INTEROP_THREADS": "8"}, cpus=2) == {}


def items_per_worker(endpoint: str, expert: str = "vader", want: int = 2) -> dict[int, int]:
    """``{pid: documents expert answered}`` of each worker (its ``stats()``), over fresh
    connections."""
    seen: dict[int, int] = {}
    for _ in range(200):
        client = zerorpc.Client(endpoint, timeout=10, heartbeat=None)
        try:
            pid = client.health()["pid"]
            seen[pid] = client.stats()["experts"][expert]["items"]
        finally:
            client.close()
        if len(seen) >= want:
            break
    return seen


def test_kill_9_of_a_worker_under_a_pipe_stream_loses_no_document(tmp_path):
    # The stream spreads its chunks over two connections, one on each worker
    # (--connections 2, the default): whichever worker dies, one of its
    # connections dies with it, and its chunks are asked again. Once the worker
    # is replaced, the stream spreads over the new one too.
    server = Supervised(VADER_CONFIG, tmp_path, 2)
    pipe = None
    try:
        env = dict(os.environ, EXPERTD_ENDPOINT=server.endpoint)
        pipe = subprocess.Popen([EXPERTD, "pipe", "--lines", "--batch-size", "50",
                                 "--timeout", "30", "vader"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=ROOT)
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.extend(pipe.stdout))
        reader.start()
        sent = 0

        def feed(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                pipe.stdin.write(json.dumps({"i": sent, "text": f"doc {sent} is rather good"})
                                 .encode() + b"\n")
                sent += 1
                if sent % 100 == 0:
                    pipe.stdin.flush()
                    time.sleep(0.01)
            pipe.stdin.flush()

        feed(2000)
        served = wait_for(lambda: (lambda s: s if len(s) == 2 and all(s.values()) else None)(
            items_per_worker(server.endpoint)), 60, "the stream to reach both workers")
        victim = min(served)
        os.kill(victim, signal.SIGKILL)
        feed(2000)
        deadline = time.monotonic() + 120
        while True:  # go on streaming until the new worker answers some of it
            now = items_per_worker(server.endpoint)
            if any(pid not in served and n > 0 for pid, n in now.items()):
                break
            assert time.monotonic() < deadline, f"no document went to a new worker: {now}"
            feed(200)
            time.sleep(0.05)
        feed(1000)
        pipe.stdin.close()
        assert pipe.wait(120) == 0, pipe.stderr.read().decode()
        reader.join()
        docs = [json.loads(line) for line in out]
        assert [d["i"] for d in docs] == list(range(sent))
        assert all("compound" in d["opinions"]["vader"] and "errors" not in d for d in docs)
        log = wait_for(lambda: (lambda t: t if re.search(
            rf"worker \d \(pid {victim}\) exited with status -9.*restarting", t)
            and t.count(" ready (pid") >= 3 else None)(server.read_log()), 60,
            "the killed worker to be replaced")
        assert "restarting it in" in log
        seen = worker_pids(server.endpoint, 2)
        assert len(seen) == 2 and victim not in seen
    finally:
        if pipe is not None and pipe.poll() is None:
            pipe.kill()  # a failed check must not leave the stage waiting for input
        assert server.stop() == 0, server.read_log()


def call_stream_through_fresh_connections(endpoint: str, stop: threading.Event,
                                          results: list, errors: list) -> None:
    """Each call on a new stock zerorpc client, until ``stop``: ``(pid, version)`` or the error."""
    while not stop.is_set():
        client = zerorpc.Client(endpoint, timeout=15, heartbeat=None)
        try:
            answer = client.opinion("vader", {"text": "good"})
            health = client.health()
            assert answer["label"] == "positive"
            results.append((health["pid"], health["versions"]["vader"]))
        except Exception as exc:  # counted: the test asserts there are none
            errors.append(repr(exc))
        finally:
            client.close()


def test_reload_replaces_every_worker_with_the_new_version_without_an_error(tmp_path):
    config = vader_config(tmp_path, "1")
    server = Supervised(config, tmp_path, 2)
    try:
        old = worker_pids(server.endpoint, 2)
        stop, results, errors = threading.Event(), [], []
        callers = [threading.Thread(target=call_stream_through_fresh_connections,
                                    args=(server.endpoint, stop, results, errors))
                   for _ in range(3)]
        for caller in callers:
            caller.start()
        wait_for(lambda: len(results) > 50, 30, "calls before the reload")
        vader_config(tmp_path, "2")
        reload = subprocess.run([EXPERTD, "reload", "--endpoint", server.endpoint],
                                capture_output=True, text=True, timeout=60)
        assert reload.returncode == 0, reload.stderr
        assert f"pid {server.supervisor_pid()}" in reload.stdout
        wait_for(lambda: "reload done" in server.read_log(), 120, "the reload to finish")
        during = len(results)
        wait_for(lambda: len(results) > during + 50, 30, "calls after the reload")
        stop.set()
        for caller in callers:
            caller.join()
        assert errors == [], errors[:5]
        assert {v for _, v in results} == {"1", "2"}
        new = worker_pids(server.endpoint, 2)
        assert len(new) == 2 and not set(new) & set(old)
        assert all(h["versions"] == {"vader": "2"} for h in new.values())
        # after the reload, only the new workers answer, with the new version
        assert all(v == "2" for _, v in results[during + 10:])
        experts = zerorpc.Client(server.endpoint, timeout=10).experts()
        assert experts[0]["version"] == "2"
    finally:
        stop.set()
        assert server.stop() == 0, server.read_log()


def test_a_bad_new_config_leaves_the_old_workers_serving(tmp_path):
    config = vader_config(tmp_path, "1")
    server = Supervised(config, tmp_path, 2)
    try:
        old = worker_pids(server.endpoint, 2)
        vader_config(tmp_path, "2", expert="tests.broken_expert:UnloadableExpert")
        os.kill(server.supervisor_pid(), signal.SIGHUP)
        log = wait_for(lambda: (lambda t: t if "reload stopped" in t else None)(
            server.read_log()), 120, "the reload to fail")
        assert "old workers keep serving" in log
        assert "model file is truncated" in log  # the new worker said why
        now = worker_pids(server.endpoint, 2)
        assert set(now) == set(old)
        assert all(h["versions"] == {"vader": "1"} for h in now.values())
        vader_config(tmp_path, "2", expert="experts.no_such_module:Nothing")  # refused at once
        os.kill(server.supervisor_pid(), signal.SIGHUP)
        wait_for(lambda: "reload refused" in server.read_log(), 60, "the refusal")
        assert "no_such_module" in server.read_log()
        assert set(worker_pids(server.endpoint, 2)) == set(old)
        config.write_text("experts: [not, a, mapping]\n")  # refused before any worker starts
        os.kill(server.supervisor_pid(), signal.SIGHUP)
        wait_for(lambda: "reload refused" in server.read_log(), 60, "the refusal")
        assert set(worker_pids(server.endpoint, 2)) == set(old)
    finally:
        assert server.stop() == 0, server.read_log()


def test_sighup_does_not_kill_a_lone_server(tmp_path):
    server = ServerProcess(VADER_CONFIG, tmp_path)
    try:
        pid = health_over_fresh_connection(server.endpoint)["pid"]
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP ignored" in server.read_log(), 30, "the SIGHUP log line")
        health = health_over_fresh_connection(server.endpoint)
        assert health["pid"] == pid and health["worker"] is None and health["workers"] == 1
        assert health["supervisor_pid"] is None
        reload = subprocess.run([EXPERTD, "reload", "--endpoint", server.endpoint],
                                capture_output=True, text=True, timeout=60)
        assert reload.returncode == 1 and "without --workers" in reload.stderr
    finally:
        assert server.stop() == 0, server.read_log()


def test_workers_need_a_tcp_endpoint(tmp_path):
    out = subprocess.run([EXPERTD, "serve", "--config", str(VADER_CONFIG), "--workers", "2",
                          "--bind", f"ipc://{tmp_path}/sock"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 1
    assert "tcp://HOST:PORT" in out.stderr and "Traceback" not in out.stderr


def test_health_port_answers_200_then_503_while_draining(tmp_path):
    import urllib.error
    import urllib.request

    health_port = free_port()
    server = ServerProcess(Path(__file__).resolve().parents[1] / "odd_experts.yaml", tmp_path,
                           "--health-port", str(health_port), "--drain-timeout", "30")
    url = f"http://127.0.0.1:{health_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert response.status == 200 and body["status"] == "ok" and "slow" in body["versions"]
        from expertd.clients.wire import connect

        connection = connect(server.endpoint, timeout=60)
        slow = threading.Thread(target=lambda: connection.call("opinion", "slow", {"text": "x"}))
        slow.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)  # draining: the slow call keeps it alive

        def draining():
            try:
                urllib.request.urlopen(url, timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code == 503 and json.loads(exc.read())["status"] == "draining"
            return False

        wait_for(draining, 10, "503 while draining")
        slow.join()
        connection.close()
    finally:
        assert server.stop() == 0, server.read_log()


def test_workers_from_the_experts_file(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("server:\n  workers: 2\n" + VADER_CONFIG.read_text())
    server = ServerProcess(config, tmp_path)
    try:
        wait_for(lambda: "2 workers serving" in server.read_log(), 120, "two workers")
        assert len(worker_pids(server.endpoint, 2)) == 2
    finally:
        assert server.stop() == 0, server.read_log()


def test_a_worker_that_cannot_load_stops_the_start_with_the_reason(tmp_path):
    config = vader_config(tmp_path, "1", expert="tests.broken_expert:UnloadableExpert")
    out = subprocess.run([EXPERTD, "serve", "--config", str(config), "--workers", "2",
                          "--bind", f"tcp://127.0.0.1:{free_port()}"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 1, out.stderr
    assert "model file is truncated" in out.stderr and "before it was ready" in out.stderr
    assert "Traceback" not in out.stderr


def test_reload_under_a_pipe_stream_loses_no_document(tmp_path):
    config = vader_config(tmp_path, "1")
    server = Supervised(config, tmp_path, 2)
    try:
        env = dict(os.environ, EXPERTD_ENDPOINT=server.endpoint)
        pipe = subprocess.Popen([EXPERTD, "pipe", "--lines", "--batch-size", "50",
                                 "--timeout", "30", "vader"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=ROOT)
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.extend(pipe.stdout))
        reader.start()
        i = 0

        def feed(count: int) -> None:
            nonlocal i
            for _ in range(count):
                pipe.stdin.write(json.dumps({"i": i, "text": "fine"}).encode() + b"\n")
                i += 1
                if i % 100 == 0:
                    pipe.stdin.flush()
                    time.sleep(0.01)

        feed(1000)
        vader_config(tmp_path, "2")
        os.kill(server.supervisor_pid(), signal.SIGHUP)
        while "reload done" not in server.read_log():
            feed(100)
            assert i < 200_000, server.read_log()
        feed(1000)
        pipe.stdin.close()
        assert pipe.wait(120) == 0, pipe.stderr.read().decode()
        reader.join()
        docs = [json.loads(line) for line in out]
        assert [d["i"] for d in docs] == list(range(i))
        assert all("compound" in d["opinions"]["vader"] and "errors" not in d for d in docs)
        assert all(h["versions"] == {"vader": "2"}
                   for h in worker_pids(server.endpoint, 2).values())
    finally:
        assert server.stop() == 0, server.read_log()


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5", "true"])
def test_a_bad_workers_setting_is_refused_with_its_value(tmp_path, value):
    config = tmp_path / "experts.yaml"
    config.write_text(f"server: {{workers: {value}}}\n" + VADER_CONFIG.read_text())
    out = subprocess.run([EXPERTD, "serve", "--config", str(config), "--bind",
                          f"tcp://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 1
    assert "server.workers must be an integer >= 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_taken_health_port_is_named(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([EXPERTD, "serve", "--config", str(VADER_CONFIG), "--bind",
                              f"tcp://127.0.0.1:{free_port()}", "--health-port", str(port)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 1
    assert f"--health-port {port}" in out.stderr and "Traceback" not in out.stderr


def test_sigterm_lets_every_worker_finish_its_calls(tmp_path):
    from expertd.clients.wire import connect

    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  slow:\n    expert: expertd.experts.examples:SlowExpert\n"
                      "    options: {seconds: 3}\n")
    server = Supervised(config, tmp_path, 2)
    by_pid: dict = {}
    while len(by_pid) < 2:  # one connection on each worker
        connection = connect(server.endpoint, timeout=60)
        pid = connection.call("health")["pid"]
        if pid in by_pid:
            connection.close()
        else:
            by_pid[pid] = connection
    connections = list(by_pid.values())
    answers: list = []
    callers = [threading.Thread(target=lambda c=c: answers.append(
        c.call("opinion", "slow", {"text": "x"}))) for c in connections]
    for caller in callers:
        caller.start()
    time.sleep(1.0)  # the calls are running on both workers
    assert server.stop() == 0, server.read_log()
    for caller in callers:
        caller.join()
    for c in connections:
        c.close()
    assert answers == [{"slept": 3}] * len(connections)
    assert server.read_log().count("finishing in-flight calls") == 2


def test_expertd_stop_stops_the_supervisor_and_every_worker(tmp_path):
    server = Supervised(VADER_CONFIG, tmp_path, 2)
    try:
        workers = set(worker_pids(server.endpoint, 2))
        out = subprocess.run([EXPERTD, "stop", "--endpoint", server.endpoint], capture_output=True,
                             text=True, timeout=90, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        server.process.wait(60)  # the supervisor itself exits (a worker alone would be restarted)
        for pid in workers:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}")
                     or "zombie" in open(f"/proc/{pid}/status").read().lower(), 30, f"worker {pid} gone")
    finally:
        server.stop()


def test_reload_with_a_metrics_port_replaces_every_worker(tmp_path):
    # Each worker serves metrics on --metrics-port + its index; the new worker i
    # starts while the old worker i still holds that port.
    config = vader_config(tmp_path, "1")
    metrics = free_port()
    server = Supervised(config, tmp_path, 2, "--metrics-port", str(metrics))
    try:
        vader_config(tmp_path, "2")
        os.kill(server.supervisor_pid(), signal.SIGHUP)
        wait_for(lambda: "reload done" in server.read_log() or "reload stopped" in server.read_log(),
                 120, "the reload to end")
        assert "reload done" in server.read_log(), server.read_log()[-3000:]
        assert all(h["versions"] == {"vader": "2"} for h in worker_pids(server.endpoint, 2).values())
        import urllib.request

        body = wait_for(lambda: _metrics(urllib.request, metrics), 30, "metrics from the new worker")
        assert "expertd_calls" in body
    finally:
        assert server.stop() == 0, server.read_log()


def _metrics(request, port):
    try:
        return request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/PID/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_share(pid: int, seconds: float = 3.0) -> float:
    """The share of one core that ``pid`` used over ``seconds`` of wall time."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def test_a_worker_killed_as_its_replacement_gets_ready_leaves_an_idle_supervisor(tmp_path):
    # The window: during a reload, slot 0's old worker dies in the same supervisor
    # tick in which slot 0's replacement says ready. Hit deterministically: stop the
    # supervisor (SIGSTOP) once the replacement is started, kill -9 the old worker,
    # let the replacement write its ready line, then let the supervisor go on: it
    # sees both at once. A pending restart of a slot that the replacement filled
    # used to be kept forever, its wait always 0 s: 100% of a core, idle.
    config = vader_config(tmp_path, "1")
    server = Supervised(config, tmp_path, 2)
    supervisor = server.supervisor_pid()
    stopped = False
    try:
        old = int(re.search(r"worker 0 ready \(pid (\d+)\)", server.read_log())[1])
        vader_config(tmp_path, "2")
        os.kill(supervisor, signal.SIGHUP)
        new = int(wait_for(lambda: re.search(r"reload: replacing[\s\S]*worker 0 starting "
                                             r"\(pid (\d+)\)", server.read_log()),
                           60, "the replacement of worker 0 to start")[1])
        os.kill(supervisor, signal.SIGSTOP)
        stopped = True
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: f"pid {new}, up to" in server.read_log(), 120,
                 "the replacement to listen")  # its last line before the ready line
        time.sleep(0.5)  # the ready line is written right after
        os.kill(supervisor, signal.SIGCONT)
        stopped = False
        wait_for(lambda: "reload done" in server.read_log(), 120, "the reload to finish")
        time.sleep(2.0)  # a restart of slot 0, if one were (wrongly) started, gets going
        share = idle_cpu_share(supervisor)
        assert share < 0.05, f"idle supervisor used {share:.0%} of a core:\n{server.read_log()}"
        seen = worker_pids(server.endpoint, 2)
        assert len(seen) == 2 and old not in seen
        assert all(h["versions"] == {"vader": "2"} for h in seen.values())
        assert {h["worker"] for h in seen.values()} == {0, 1}
        for _ in range(2):  # and after two more reloads
            done = server.read_log().count("reload done")
            os.kill(supervisor, signal.SIGHUP)
            wait_for(lambda done=done: server.read_log().count("reload done") > done, 120,
                     "a reload")
        share = idle_cpu_share(supervisor)
        assert share < 0.05, f"idle supervisor used {share:.0%} of a core:\n{server.read_log()}"
    finally:
        if stopped:
            os.kill(supervisor, signal.SIGCONT)
        assert server.stop() == 0, server.read_log()
