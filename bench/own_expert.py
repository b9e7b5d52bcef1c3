"""A stdin/stdout TensorFlow expert script against the same expert behind ``expertd pipe``.

    .venv/bin/python -m bench.own_expert [--runs 5]

The script and the expert are docs/examples/mood/ (docs/your-own-expert.md,
"Bring a stdin/stdout expert"), with the repository's sentiment model as
``MOOD_MODEL``. Each run answers one document, as one pipeline stage does per
invocation: ``python mood_script.py`` (imports TensorFlow, loads the model,
predicts) against ``expertd pipe mood`` asking a warm ``expertd serve``. The
arms alternate run by run; a row is the median wall time and the largest peak
resident memory (``wait4``'s rusage of the child) over the runs. The opinions of both are
compared first. Writes ``bench/RESULTS-own-expert.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from bench.common import BENCH, EXPERTD, PYTHON, ROOT, SENTIMENT_MODEL, child_env, median
from bench.machine import machine
from bench.servers import Fleet

EXAMPLE = ROOT / "docs" / "examples" / "mood"
RESULTS = BENCH / "RESULTS-own-expert.md"
DOCUMENT = '{"id": 1, "text": "What a wonderful day, I love it!"}\n'


def timed(command: list[str], env: dict, stdin: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB, from ``wait4``'s rusage of that child) and stdout of one run."""
    began = time.perf_counter()
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env, cwd=EXAMPLE, text=True)
    child.stdin.write(stdin)
    child.stdin.close()
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stdout.close()
    if child.returncode != 0:
        raise RuntimeError(f"{command} exited with {child.returncode}")
    return wall, usage.ru_maxrss / 1024, out


def main(argv: list[str] | None = None) -> int:
    """Measure both arms and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.own_expert", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    env = child_env(MOOD_MODEL=str(SENTIMENT_MODEL))
    with Fleet() as fleet:
        server = fleet.expertd("own-expert", EXAMPLE / "experts.yaml", env)
        fleet.wait_ready([server], timeout=300.0)
        endpoint = server.url
        script = [PYTHON, "mood_script.py"]
        stage = [EXPERTD, "pipe", "mood", "--endpoint", endpoint, "--timeout", "120"]
        documents = (EXAMPLE / "documents.jsonl").read_text()
        same = [json.loads(line) for line in timed(script, env, documents)[2].splitlines()] == \
               [json.loads(line) for line in timed(stage, env, documents)[2].splitlines()]
        rows = {"script": [], "stage": []}
        for _ in range(args.runs):  # alternating, so both see the same load
            rows["script"].append(timed(script, env, DOCUMENT)[:2])
            rows["stage"].append(timed(stage, env, DOCUMENT)[:2])
    wall = {arm: median(r[0] for r in runs) for arm, runs in rows.items()}
    peak = {arm: max(r[1] for r in runs) for arm, runs in rows.items()}
    info = machine()
    lines = [
        "# Your own expert: a stdin/stdout TensorFlow script against `expertd pipe`",
        "",
        f"`python -m bench.own_expert` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores.",
        "",
        "docs/examples/mood: `python mood_script.py` (imports TensorFlow, loads the sentiment model, "
        "answers) against `expertd pipe mood` asking a warm server of the same expert "
        f"(docs/your-own-expert.md). One document per run; median of {args.runs} runs each.",
        "",
        "| stage | wall ms (median) | peak MiB |",
        "|---|---:|---:|",
        f"| `python mood_script.py` | {wall['script'] * 1000:,.0f} | {peak['script']:,.0f} |",
        f"| `expertd pipe mood` | {wall['stage'] * 1000:,.0f} | {peak['stage']:,.0f} |",
        "",
        f"The pipe stage is **{wall['script'] / wall['stage']:,.0f}x** faster per run. Same opinions on "
        f"documents.jsonl: {'yes' if same else 'NO'}.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
