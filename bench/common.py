"""Shared helpers: paths, free ports, statistics, the benchmark texts, process memory."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TMP = BENCH / "tmp"
#: The interpreter running the benchmark (the project's venv when run by ``make bench``).
PYTHON = sys.executable
BIN = Path(sys.executable).parent
EXPERTD = str(BIN / "expertd")
#: The sentiment model every path loads (``BENCH_MODEL_DIR`` overrides, for development).
MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR") or ROOT / "models" / "sentiment").resolve()
SENTIMENT_MODEL = MODEL_DIR / "model.keras"
#: The experts file served as "the default" (``BENCH_CONFIG`` overrides, for development).
DEFAULT_CONFIG = Path(os.environ.get("BENCH_CONFIG") or ROOT / "config" / "experts.yaml").resolve()


def child_env(**extra: str) -> dict[str, str]:
    """Environment for every child: quiet TensorFlow, the venv first on PATH.

    ``PYTHONDONTWRITEBYTECODE`` is dropped so that Python caches bytecode as in
    a normal installation; with it, every pipe stage would compile expertd's
    own modules from source again (about 10 ms).
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("EXPERTD_ENDPOINT", None)
    env["BENCH_MODEL_DIR"] = str(MODEL_DIR)
    env.update(extra)
    return env


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that was not handed out before.

    Servers are started together and bind later, so the same free port must
    never be handed to two of them.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


# -- statistics -----------------------------------------------------------------

def interleaved(arms: dict, concurrencies: list[int], rounds: int, run, label: str,
                rate: str, extra=None) -> dict:
    """Run ``run(target, concurrency)`` for every arm in rounds (A, B, A, B, ...).

    Returns one row per ``"<arm>@<concurrency>"``: the median of ``rate`` and of
    p50/p99 over the rounds, each round's ``rate``, and the errors;
    ``extra(items)`` may add fields.
    """
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for concurrency in concurrencies:
            for arm, target in arms.items():
                runs.setdefault((arm, concurrency), []).append(run(target, concurrency))
    table = {}
    for (arm, concurrency), items in runs.items():
        table[f"{arm}@{concurrency}"] = {
            label: arm,
            "concurrency": concurrency,
            "runs": len(items),
            rate: median(r[rate] for r in items),
            f"{rate}_runs": [round(r[rate], 1) for r in items],
            "p50_ms": median(r["p50_ms"] for r in items),
            "p99_ms": median(r["p99_ms"] for r in items),
            "errors": sum(r["errors"] for r in items),
            **(extra(items) if extra else {}),
        }
    return table


def median(values: Iterable[float]) -> float:
    """The median (``nan`` for no values)."""
    data = sorted(values)
    if not data:
        return math.nan
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def ratio(a: float, b: float) -> float:
    """``a / b``, ``nan`` when either is missing or ``b`` is zero."""
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


# -- the texts --------------------------------------------------------------------

def load_texts(seed: int = 2014) -> list[str]:
    """Every VADER ground-truth sentence, in a fixed shuffled order (sources mixed)."""
    from expertd.experts.data import load_ground_truth

    texts = [text for text, _, _ in load_ground_truth(ROOT / "data") if text]
    random.Random(seed).shuffle(texts)
    return texts


def write_texts(texts: list[str], path: Path) -> Path:
    """Save texts as one JSON list (what the load generators read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(texts, ensure_ascii=False))
    return path


def write_jsonl(texts: list[str], count: int, path: Path) -> Path:
    """``count`` documents ``{"id", "text"}``, one per line, cycling through ``texts``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(count):
            out.write(json.dumps({"id": i, "text": texts[i % len(texts)]}, ensure_ascii=False))
            out.write("\n")
    return path


# -- memory -------------------------------------------------------------------------

def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status``; ``None`` if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (via ``/proc/<pid>/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
            except OSError:
                pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (all its threads; 0.0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (``cpu_seconds`` summed)."""
    return sum(cpu_seconds(p) for p in descendants(pid))


def tree_kib(pid: int, field: str) -> int | None:
    """Sum of a ``/proc/<pid>/status`` field over a process and its descendants."""
    values = [proc_status_kib(p, field) for p in descendants(pid)]
    values = [v for v in values if v is not None]
    return sum(values) if values else None
