"""Resident memory of a server around one big call: ``python -m bench.memory --label L``.

Starts one ``expertd serve`` (the default experts file unless ``--config``),
reads its resident memory (``VmRSS`` of ``/proc/PID/status``) once ready,
then sends ``--docs`` documents (VADER ground-truth sentences, cycled) in one
``opinions_batch`` over every expert from the stock zerorpc client, while a
second stock client calls ``health()`` and a one-document ``opinion`` in a
loop (the worst wait of those is reported, and any error). Resident memory is
sampled through the call (its peak) and after it (1 s, 5 s and ``--idle`` s);
then a second big call and the same. Each run is one row of
``bench/RESULTS-memory.md`` (rows are kept in ``bench/tmp/memory.json`` by
label, so runs of different code or settings sit side by side);
``--env NAME=VALUE`` sets the server's environment (e.g. ``MALLOC_ARENA_MAX=2``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import BENCH, DEFAULT_CONFIG, EXPERTD, ROOT, TMP, free_port, load_texts, proc_status_kib

RESULTS = BENCH / "RESULTS-memory.md"
RAW = TMP / "memory.json"


def mib(pid: int, field: str = "VmRSS") -> float:
    """A ``kB`` field of ``/proc/PID/status`` in MiB (0 if the process is gone)."""
    return (proc_status_kib(pid, field) or 0) / 1024


def wait_ready(endpoint: str, process: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll ``health()`` until the server answers."""
    import zerorpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        client = zerorpc.Client(endpoint, timeout=2, heartbeat=None)
        try:
            client.health()
            return
        except Exception:
            time.sleep(0.5)
        finally:
            client.close()
    raise RuntimeError("server not ready")


def side_caller(endpoint: str, stop: threading.Event, out: dict) -> None:
    """``health()`` and a one-document ``opinion`` in a loop; the worst wait and any errors."""
    import zerorpc

    client = zerorpc.Client(endpoint, timeout=60)
    worst, errors, calls = 0.0, [], 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            client.health()
            client.opinion("vader", {"text": "a fine day"})
            calls += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        worst = max(worst, time.monotonic() - began)
        time.sleep(0.05)
    client.close()
    out.update(worst_wait_s=round(worst, 2), side_calls=calls, side_errors=errors[:3])


def side_process(endpoint: str) -> subprocess.Popen:
    """``side_caller`` in a process of its own (this one's GIL is busy with the big reply)."""
    return subprocess.Popen([sys.executable, "-m", "bench.memory", "--side", endpoint],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)


def big_call(endpoint: str, pid: int, docs: list[dict]) -> dict:
    """One ``opinions_batch`` over every expert, RSS sampled until it is answered."""
    import zerorpc

    result: dict = {}
    caller = side_process(endpoint)
    time.sleep(1.0)

    def call() -> None:
        client = zerorpc.Client(endpoint, timeout=600)  # the stock client, heartbeat 5 s
        began = time.monotonic()
        try:
            answer = client.opinions_batch(docs)
            result["answered"] = len(answer)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"[:200]
        result["seconds"] = round(time.monotonic() - began, 1)
        client.close()

    worker = threading.Thread(target=call)
    worker.start()
    peak = 0.0
    while worker.is_alive():
        peak = max(peak, mib(pid))
        time.sleep(0.1)
    side, _ = caller.communicate(b"", timeout=120)
    side = json.loads(side)
    result["peak_mib"] = round(max(peak, mib(pid)), 0)
    after = {}
    began = time.monotonic()
    for at in (1, 5, ARGS.idle):
        time.sleep(max(0.0, began + at - time.monotonic()))
        after[f"{at}s"] = round(mib(pid), 0)
    result["after_mib"] = after
    result.update(side)
    return result


def run(label: str, config: Path, count: int, env: dict) -> dict:
    """Start a server, two big calls; the row of this run."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    TMP.mkdir(parents=True, exist_ok=True)
    log = open(TMP / f"memory-{re.sub(r'[^A-Za-z0-9_.-]+', '-', label)}.log", "wb")
    process = subprocess.Popen([EXPERTD, "serve", "--config", str(config), "--bind", endpoint],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, **env})
    try:
        wait_ready(endpoint, process)
        time.sleep(2)
        ready = round(mib(process.pid), 0)
        texts = load_texts()
        docs = [{"id": i, "text": texts[i % len(texts)]} for i in range(count)]
        calls = [big_call(endpoint, process.pid, docs) for _ in range(2)]
        return {"label": label, "docs": count, "env": env, "ready_mib": ready, "calls": calls,
                "hwm_mib": round(mib(process.pid, "VmHWM"), 0)}
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def report(rows: dict) -> str:
    """The Markdown page of every recorded row."""
    lines = ["# Resident memory around one big call", "",
             f"`python -m bench.memory` on {platform.node()} ({os.cpu_count()} cores), "
             "one `expertd serve` with the default experts; each big call is one "
             "`opinions_batch` over every expert from the stock zerorpc client while a "
             "second client calls `health()` + a one-document `opinion` in a loop. MiB "
             "resident (VmRSS); `after idle` is after `--idle` seconds (10 in these runs), "
             "`held` is that as a share over ready. Rows 1a-1c and 3 set the server's "
             "environment (`--env`); the other rows are the code of that step.", "",
             "| run | docs | ready | call | seconds | peak | after 1 s | after 5 s | after idle "
             "| held | worst side wait (s) | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows.values():
        for n, call in enumerate(row["calls"], 1):
            after = list(call["after_mib"].values())
            held = (after[-1] - row["ready_mib"]) / row["ready_mib"]
            errors = "; ".join(filter(None, [call.get("error"), *call.get("side_errors", [])]))
            lines.append(f"| {row['label']} | {row['docs']} | {row['ready_mib']:.0f} | {n} | "
                         f"{call['seconds']} | {call['peak_mib']:.0f} | {after[0]:.0f} | "
                         f"{after[1]:.0f} | {after[2]:.0f} | {held:+.0%} | "
                         f"{call.get('worst_wait_s')} | {errors or 'none'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run one labelled row, keep it beside the earlier ones, rewrite the report."""
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--idle", type=int, default=20, help="seconds idle before the last sample")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # run as the side caller
    ARGS = parser.parse_args()
    if ARGS.side:
        stop, out = threading.Event(), {}
        caller = threading.Thread(target=side_caller, args=(ARGS.side, stop, out))
        caller.start()
        sys.stdin.read()
        stop.set()
        caller.join()
        print(json.dumps(out))
        return
    env = dict(item.split("=", 1) for item in ARGS.env)
    row = run(ARGS.label, ARGS.config, ARGS.docs, env)
    print(json.dumps(row, indent=1))
    rows = json.loads(RAW.read_text()) if RAW.exists() else {}
    rows[ARGS.label] = row
    RAW.write_text(json.dumps(rows, indent=1))
    RESULTS.write_text(report(rows))


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
