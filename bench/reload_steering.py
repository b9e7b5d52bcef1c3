"""Does a reload lose fresh connections? ``expertd serve --workers 2`` under reloads.

    .venv/bin/python -m bench.reload_steering [RELOADS] [THREADS]

Starts ``expertd serve --workers 2`` with the ``vader`` expert, keeps THREADS
client threads opening a fresh connection per ``health()`` call
(``clients.wire``, no retry), sends SIGHUP RELOADS times (each waits for
"reload done" in the log) and prints how many calls failed and why.

The comparison in ``rpc_server.supervisor``'s docstring ran it as is, and with
``Supervisor.reload`` spawning its new workers with ``steer=False`` (no BPF
steering of new connections to the new worker).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from expertd.clients.wire import CallTimeout, Connection, RemoteError, ServerUnavailable
from tests.conftest import BIN, ROOT, free_port


def main(reloads: int = 5, threads: int = 4) -> None:
    """Run the measurement and print one line."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log_path = Path(tempfile.mkdtemp()) / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(BIN / "expertd"), "serve", "--workers", "2", "--config",
                                   str(ROOT / "tests" / "vader_experts.yaml"), "--bind", endpoint],
                                  stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while "workers serving" not in log_path.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(log_path.read_text())
            time.sleep(0.2)
        done = threading.Event()
        ok = collections.Counter()
        failed = collections.Counter()

        def calls() -> None:
            while not done.is_set():
                try:
                    with Connection(endpoint, timeout=5) as connection:
                        connection.call("health")
                    ok["ok"] += 1
                except (ServerUnavailable, CallTimeout, RemoteError) as exc:
                    failed[f"{type(exc).__name__}: {str(exc)[:50]}"] += 1

        workers = [threading.Thread(target=calls) for _ in range(threads)]
        for thread in workers:
            thread.start()
        time.sleep(1.0)
        began = time.monotonic()
        for _ in range(reloads):
            seen = log_path.read_text().count("reload done")
            os.kill(server.pid, signal.SIGHUP)
            while log_path.read_text().count("reload done") == seen:
                time.sleep(0.1)
        took = time.monotonic() - began
        time.sleep(0.5)
        done.set()
        for thread in workers:
            thread.join()
        print(f"{reloads} reloads in {took:.1f} s: {ok['ok']} calls answered, "
              f"{sum(failed.values())} failed {dict(failed)}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
