"""Two ways for worker processes to share one port, measured side by side.

    .venv/bin/python -m bench.handover            # prints one JSON line per way and round

- ``reuseport``: each worker makes its own ``SO_REUSEPORT`` listener
  (``transport.reuseport.bind_shared``, what ``--workers`` does today);
- ``inherited``: the parent makes one listener and each worker hands its
  inherited descriptor to ZeroMQ (``transport.reuseport.bind_inherited``, the
  way gunicorn and uvicorn share a port).

For each: which of two workers answered 40 fresh connections (one call
each), then, with ``CONCURRENCY`` threads opening fresh connections for 2 s,
worker 0 closes its listener after 0.5 s *without* waiting for an idle moment
(the worst case; ``transport.drain.retire`` waits): calls that got no answer
within 2 s ("lost"), latency percentiles, and who answered. The workers are
bare ``transport.Server`` processes with one method, no experts. Figures are
noisy on a shared 2-core machine: compare the two ways from one run only.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import msgpack
import zmq

HOST = "127.0.0.1"
CONCURRENCY = 16
ROUNDS = 2

WORKER = r'''
import signal, sys
import gevent, zmq
from expertd.rpc_server import transport
from expertd.rpc_server.transport import reuseport
label, endpoint, way, fd = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
server = transport.Server({"who": lambda: label})
if way == "reuseport":
    reuseport.bind_shared(server, endpoint)
else:
    reuseport.bind_inherited(server, endpoint, fd)
gevent.signal_handler(signal.SIGUSR1, lambda: server.unbind(endpoint))
print("ready", flush=True)
server.run()
'''


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def call(endpoint: str, timeout_ms: int = 2000) -> tuple[str | None, float]:
    """One call ``who()`` on a fresh connection: ``(who answered or None, seconds)``."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    began = time.perf_counter()
    try:
        sock.send_multipart([b"", msgpack.packb([{"message_id": "m", "v": 3}, "who", []])])
        while sock.poll(timeout_ms):
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
            if reply[1] == "OK":
                return reply[2][0], time.perf_counter() - began
        return None, time.perf_counter() - began
    finally:
        sock.close()


def measure(way: str) -> dict:
    """One round of one way (see the module docstring)."""
    port = free_port()
    endpoint = f"tcp://{HOST}:{port}"
    fd, pass_fds, listener = -1, (), None
    if way == "inherited":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, port))
        listener.listen(1024)
        fd, pass_fds = listener.fileno(), (listener.fileno(),)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, f"w{i}", endpoint, way, str(fd)],
                                pass_fds=pass_fds, stdout=subprocess.PIPE, text=True)
               for i in range(2)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        if listener is not None:
            listener.close()
        spread: dict[str, int] = {}
        for _ in range(40):
            who, _ = call(endpoint)
            spread[who] = spread.get(who, 0) + 1
        latencies, answered, lost = [], {}, [0]
        lock = threading.Lock()
        stop = time.monotonic() + 2.0

        def caller() -> None:
            while time.monotonic() < stop:
                who, seconds = call(endpoint)
                with lock:
                    if who is None:
                        lost[0] += 1
                    else:
                        latencies.append(seconds)
                        answered[who] = answered.get(who, 0) + 1

        threads = [threading.Thread(target=caller) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        workers[0].send_signal(10)  # SIGUSR1: close the listener now
        for thread in threads:
            thread.join()
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    latencies.sort()
    return {"way": way, "spread_of_40": spread, "calls": len(latencies), "lost": lost[0],
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1), "answered_by": answered}


def main() -> None:
    """Interleaved rounds of both ways, one JSON line each."""
    for _ in range(ROUNDS):
        for way in ("reuseport", "inherited"):
            print(json.dumps(measure(way)), flush=True)


if __name__ == "__main__":
    main()
