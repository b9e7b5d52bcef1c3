"""What the image test adds to ``make test``: tests/e2e/test_deploy_image.py from an empty
build cache, after a commit that changes only Python code, and with nothing changed.

    sudo .venv/bin/python -m bench.image_cache       # writes bench/RESULTS-image-cache.md

Each run is the whole test module as ``make test`` runs it (``pytest -rs``): the
recipe's static checks, deploy/image/build.sh (each step ran or reused from the
cache, as the test prints it), a ``podman run`` of the image until healthy, a call,
``podman stop``. The cache is a fresh directory (``EXPERTD_IMAGE_CACHE``), not the
machine's. "A commit to Python code" is a copy of this checkout (``git archive
HEAD``) with one line added to a module, built with ``SOURCE``; after it, the size
of the cache shows that the older image's layers were pruned.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import machine, now

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS-image-cache.md"
WORK = Path("/var/tmp/expertd-bench-image-cache")  # short: podman wants a runroot of 50 characters at most
TEST = "tests/e2e/test_deploy_image.py"
#: The module a "Python-only commit" touches.
TOUCHED = "rpc_server/commands.py"


def du_mib(path: Path) -> float:
    """Disk use of ``path`` in MiB (``du``: hard links counted once)."""
    done = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True)
    return float(done.stdout.split()[0]) if done.returncode == 0 else 0.0


def run_test(cache: Path, source: Path | None = None) -> dict:
    """The image test module once: wall seconds, what each step did, the outcome line."""
    env = dict(os.environ, EXPERTD_IMAGE_CACHE=str(cache))
    if source is not None:
        env["SOURCE"] = str(source)
    began = time.monotonic()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "-rs", "-p", "no:cacheprovider", TEST],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=7200)
    wall_s = time.monotonic() - began
    steps = re.findall(r"\[image\] (step \w+: .*|podman build layers: .*)$", done.stdout, re.M)
    outcome = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    if done.returncode != 0 or "skipped" in outcome:  # a skip measures nothing
        raise SystemExit(f"the image test failed or skipped:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return {"wall_s": wall_s, "steps": steps, "outcome": outcome.strip("= "),
            "cache_mib": du_mib(cache)}


def python_only_commit(into: Path) -> Path:
    """A copy of HEAD with one line added to a Python module (the wheel changes, nothing else)."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    with open(into / TOUCHED, "a") as module:
        module.write(f"# bench.image_cache: a change to Python code only ({now()})\n")
    return into


def render(results: dict) -> str:
    """The report."""
    m = results["machine"]
    runs = results["runs"]
    lines = [
        "# The image test with its build cache",
        "",
        f"Run {results['date']} on {m['cpu']} ({m['usable_cores']} usable cores, {m['ram_gib']} GiB), "
        f"{m['os']}; `python -m bench.image_cache`, one run of each case in this order.",
        "",
        "## Headline",
        "",
        f"- **From an empty cache**: the image test ({TEST}) took {runs['cold']['wall_s']:.0f} s.",
        f"- **After a commit to Python code only**: {runs['warm']['wall_s']:.0f} s "
        f"(expertd's wheel and the layers after it rebuilt, the rest reused).",
        f"- **Nothing changed**: {runs['same']['wall_s']:.0f} s.",
        f"- Cache after the three: {runs['same']['cache_mib']:,.0f} MiB (one root filesystem, one set "
        "of wheels, podman's storage with one image).",
        "",
        "## Each run",
        "",
        "| case | test seconds | cache MiB after | what each step did |",
        "|---|---:|---:|---|",
    ]
    names = {"cold": "empty cache", "warm": f"one line added to {TOUCHED}", "same": "nothing changed"}
    for case, run in runs.items():
        lines.append(f"| {names[case]} | {run['wall_s']:.1f} | {run['cache_mib']:,.0f} | "
                     + "; ".join(step.replace("|", "/") for step in run["steps"]) + " |")
    lines += ["", "pytest's last line, each run: " + "; ".join(r["outcome"] for r in runs.values()), ""]
    return "\n".join(lines)


def main() -> None:
    """Measure the three cases and write bench/RESULTS-image-cache.md."""
    if os.geteuid() != 0:
        raise SystemExit("bench.image_cache: run it as root (debootstrap and podman need it here)")
    cache = WORK / "cache"
    if cache.exists():
        subprocess.run(["podman", "--root", str(cache / "storage"), "--runroot", str(cache / "run"),
                        "system", "reset", "--force"], capture_output=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    results: dict = {"date": now(), "machine": machine(), "runs": {}}
    results["runs"]["cold"] = run_test(cache)
    print(f"cold: {results['runs']['cold']}", file=sys.stderr)
    source = python_only_commit(WORK / "source")
    results["runs"]["warm"] = run_test(cache, source)
    print(f"warm: {results['runs']['warm']}", file=sys.stderr)
    results["runs"]["same"] = run_test(cache, source)
    print(f"same: {results['runs']['same']}", file=sys.stderr)
    RESULTS.write_text(render(results))
    subprocess.run(["podman", "--root", str(cache / "storage"), "--runroot", str(cache / "run"),
                    "system", "reset", "--force"], capture_output=True)
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
