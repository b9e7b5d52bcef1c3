"""The RPC load generator: stock ``zerorpc.Client`` driven by gevent greenlets.

Runs in its own process. ``--concurrency`` greenlets share one client and
each calls ``METHOD({"text": ...})`` in a loop (texts cycled from a JSON list)
for ``--warmup`` seconds, then ``--duration`` more seconds; only the calls
that complete inside the measured window count. Prints one JSON line:
calls, seconds, calls_per_s, p50_ms, p99_ms, mean_ms, max_ms, errors.

    python -m bench.load --endpoint tcp://127.0.0.1:4242 --concurrency 16 \\
        --duration 5 --warmup 1 --texts bench/tmp/texts.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gevent
import zerorpc

from bench.common import percentile


def run(endpoint: str, method: str, concurrency: int, duration: float, warmup: float,
        texts: list[str]) -> dict:
    """Drive the server with a new stock client; return the statistics of the measured window."""
    client = zerorpc.Client(endpoint, timeout=30, heartbeat=5)
    try:
        return drive(client, method, concurrency, duration, warmup, texts)
    finally:
        client.close()


def drive(client: zerorpc.Client, method: str, concurrency: int, duration: float, warmup: float,
          texts: list[str]) -> dict:
    """``concurrency`` greenlets call ``method`` on a connected ``client``; the window's statistics."""
    docs = [{"text": t} for t in texts]
    client("health")  # connected before the clock starts
    window_start = time.perf_counter() + warmup
    window_end = window_start + duration
    latencies: list[float] = []
    errors: list[str] = []

    def caller(index: int) -> None:
        k = index
        while True:
            start = time.perf_counter()
            if start >= window_end:
                return
            try:
                client(method, docs[k % len(docs)])
            except Exception as exc:  # count it, keep the load on
                if start >= window_start:
                    errors.append(f"{type(exc).__name__}: {exc}")
                gevent.sleep(0.01)
                continue
            end = time.perf_counter()
            if window_start <= end <= window_end:
                latencies.append(end - start)
            k += concurrency

    gevent.joinall([gevent.spawn(caller, i) for i in range(concurrency)],
                   timeout=warmup + duration + 60)
    return summary(latencies, duration, errors)


def summary(latencies: list[float], duration: float, errors: list[str]) -> dict:
    """calls, calls/s, p50, p99, mean, max and errors of a measured window (seconds in)."""
    latencies.sort()
    return {
        "calls": len(latencies),
        "seconds": duration,
        "calls_per_s": len(latencies) / duration,
        "p50_ms": percentile(latencies, 50) * 1000.0,
        "p99_ms": percentile(latencies, 99) * 1000.0,
        "mean_ms": (sum(latencies) / len(latencies) * 1000.0) if latencies else float("nan"),
        "max_ms": (latencies[-1] * 1000.0) if latencies else float("nan"),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--method", default="sentiment")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--texts", required=True, help="JSON list of texts")
    args = parser.parse_args(argv)
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    result = run(args.endpoint, args.method, args.concurrency, args.duration, args.warmup, texts)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
