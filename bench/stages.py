"""Sections 1 and 2: pipe stages as a shell runs them, timed from spawn to exit.

Every stage is a fresh process, started through GNU ``/usr/bin/time -f %M``:
its wall time is measured here from just before the spawn to its exit (GNU
time's own fork and exec add about half a millisecond), and its peak resident
memory is what GNU time reports (``ru_maxrss`` of the stage alone). Reading
``ru_maxrss`` of our own direct child instead would be wrong: Linux counts the
memory of the (v)forked parent image the child had before its ``exec``, that
is, this runner's.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BENCH, EXPERTD, PYTHON, ROOT, child_env, median, ratio

GNU_TIME = "/usr/bin/time"


@dataclass
class ChildRun:
    """One finished child: wall seconds, peak RSS (KiB), status and output, and the CPU
    seconds (user + system) it and its children spent (under GNU time: time's own too)."""

    seconds: float
    maxrss_kib: int
    returncode: int
    stdout: bytes
    stderr: bytes
    cpu_seconds: float = 0.0


def run_child(command: list[str], stdin: bytes | Path = b"", stdout_path: Path | None = None,
              timeout: float = 120.0, env: dict | None = None) -> ChildRun:
    """Run ``command`` with ``stdin`` (bytes or a file); time it and read its peak RSS."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out_tmp, \
            tempfile.NamedTemporaryFile("r") as rss_file:
        command = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *command]
        out = open(stdout_path, "wb") if stdout_path else out_tmp
        stdin_file = open(stdin, "rb") if isinstance(stdin, Path) else None
        try:
            began = time.perf_counter()
            process = subprocess.Popen(
                command, cwd=ROOT, env=env or child_env(), stdout=out, stderr=err,
                stdin=stdin_file if stdin_file else subprocess.PIPE)
            killer = threading.Timer(timeout, process.kill)
            killer.start()
            try:
                if stdin_file is None:
                    try:
                        process.stdin.write(stdin)
                        process.stdin.close()
                    except BrokenPipeError:
                        pass
                _, status, usage = os.wait4(process.pid, 0)
                seconds = time.perf_counter() - began
            except BaseException:  # Ctrl-C: do not leave the stage running
                process.kill()
                process.wait()
                raise
            finally:
                killer.cancel()
            process.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if stdin_file:
                stdin_file.close()
            if stdout_path:
                out.close()
        out_tmp.seek(0)
        err.seek(0)
        lines = rss_file.read().split()
        maxrss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        return ChildRun(seconds, maxrss, process.returncode,
                        b"" if stdout_path else out_tmp.read(), err.read(),
                        usage.ru_utime + usage.ru_stime)


def _checked_opinion(run: ChildRun, what: str) -> dict:
    """The ``opinions.sentiment`` a stage printed (or an error naming the stage)."""
    try:
        opinion = json.loads(run.stdout)["opinions"]["sentiment"]
        assert {"valence", "label", "confidence"} <= set(opinion)
        assert run.returncode == 0
        return opinion
    except (ValueError, KeyError, TypeError, AssertionError):
        raise RuntimeError(f"{what} failed (exit {run.returncode}): "
                           f"{run.stdout[:300]!r} {run.stderr[-1500:]!r}") from None


def cold_vs_warm(endpoint: str, texts: list[str], rounds: int, warm_per_round: int) -> dict:
    """Section 1: the TensorFlow-loading stage vs ``expertd pipe sentiment``, interleaved.

    Each round runs one cold stage, then ``warm_per_round`` warm stages, then
    as many ``python -c pass`` (the floor of any Python stage), so the three
    see the same machine.
    """
    cold_cmd = [PYTHON, str(BENCH / "cold_stage.py")]
    warm_cmd = [EXPERTD, "pipe", "sentiment", "--endpoint", endpoint]
    floor_cmd = [PYTHON, "-c", "pass"]
    runs: dict[str, list[ChildRun]] = {"cold": [], "warm": [], "floor": []}
    for command in (warm_cmd, floor_cmd):  # untimed: caches bytecode, opens the server's door
        run_child(command, b'{"text": "warm-up"}\n')
    agree = 0
    k = 0
    for _ in range(rounds):
        doc = json.dumps({"id": k, "text": texts[k % len(texts)]}).encode() + b"\n"
        cold = run_child(cold_cmd, doc)
        cold_opinion = _checked_opinion(cold, "cold stage")
        runs["cold"].append(cold)
        for i in range(warm_per_round):
            doc = json.dumps({"id": k, "text": texts[k % len(texts)]}).encode() + b"\n"
            warm = run_child(warm_cmd, doc)
            opinion = _checked_opinion(warm, "expertd pipe sentiment")
            if i == 0:  # the same document as the cold stage's
                agree += opinion["label"] == cold_opinion["label"]
            runs["warm"].append(warm)
            runs["floor"].append(run_child(floor_cmd))
            k += 1
    result = {}
    for arm, items in runs.items():
        result[arm] = {
            "runs": len(items),
            "median_ms": median(r.seconds for r in items) * 1000.0,
            "min_ms": min(r.seconds for r in items) * 1000.0,
            "max_ms": max(r.seconds for r in items) * 1000.0,
            "peak_rss_mib": median(r.maxrss_kib for r in items) / 1024.0,
            "max_peak_rss_mib": max(r.maxrss_kib for r in items) / 1024.0,
        }
    result["speedup"] = ratio(result["cold"]["median_ms"], result["warm"]["median_ms"])
    result["warm_over_floor_ms"] = median(
        w.seconds - f.seconds for w, f in zip(runs["warm"], runs["floor"])) * 1000.0
    result["labels_agree"] = f"{agree}/{rounds}"
    return result


def stream(endpoint: str, jsonl: Path, count: int, runs: int) -> dict:
    """Section 2: documents per second through one ``expertd pipe sentiment --lines``."""
    out_path = jsonl.with_suffix(".out.jsonl")
    command = [EXPERTD, "pipe", "sentiment", "--lines", "--endpoint", endpoint]
    results = []
    for _ in range(runs):
        run = run_child(command, jsonl, stdout_path=out_path, timeout=300)
        if run.returncode != 0:
            raise RuntimeError(f"expertd pipe --lines failed (exit {run.returncode}): "
                               f"{run.stderr[-1500:]!r}")
        with open(out_path, "rb") as f:
            lines = f.read().splitlines()
        last = json.loads(lines[-1])
        if len(lines) != count or "sentiment" not in last.get("opinions", {}):
            raise RuntimeError(f"expertd pipe --lines wrote {len(lines)} of {count} lines")
        results.append(run)
    out_path.unlink(missing_ok=True)
    seconds = [r.seconds for r in results]
    return {
        "documents": count,
        "runs": runs,
        "median_s": median(seconds),
        "docs_per_s": count / median(seconds),
        "best_docs_per_s": count / min(seconds),
        "worst_docs_per_s": count / max(seconds),
        "peak_rss_mib": max(r.maxrss_kib for r in results) / 1024.0,
    }
