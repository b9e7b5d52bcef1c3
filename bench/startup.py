"""The one-document pipe stage's start-up, side by side with a bare Python start.

``python -m bench.startup [--pairs N] [--baseline REV]`` starts one ``expertd
serve`` holding only the sentiment model, then runs, in interleaved rounds
(the order rotated each round), fresh processes of:

* ``floor``: ``python -c pass``, the start of any Python stage;
* ``floor+re``: ``python -c "import re"``, the start plus what pip's console
  script ``expertd`` imports before any expertd code runs (``import re``);
* ``stage``: ``expertd pipe sentiment`` with one document, this checkout;
* ``stage@REV``: the same command running the code of git revision ``REV``
  (extracted under bench/tmp/, first on ``PYTHONPATH``), when ``--baseline`` is given.

Each is timed from spawn to exit (``bench.stages.run_child``); a stage's cost
is the median over rounds of (stage - floor) in the same round. It also
records ``python -X importtime`` of the stage's own run (what the one-document
path imports, through the console script) for each code version: the modules
it imports beyond ``python -c pass`` and their cumulative microseconds (the
median of a few runs). Writes bench/RESULTS-startup.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tarfile
import io
import time
from pathlib import Path

from bench.common import BENCH, EXPERTD, PYTHON, ROOT, TMP, child_env, median
from bench.report import fmt, table
from bench.servers import Fleet
from bench.stages import run_child

DOCUMENT = b'{"id": 1, "text": "I love this phone, the battery lasts for days"}\n'


def sentiment_config() -> Path:
    """An experts file with only the sentiment model (the stage's server)."""
    path = TMP / "startup-sentiment.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    model_dir = Path(os.environ.get("BENCH_MODEL_DIR") or ROOT / "models" / "sentiment").resolve()
    path.write_text("experts:\n  sentiment:\n    expert: expertd.experts.keras_text:SentimentExpert\n"
                    f"    options: {{model_dir: {json.dumps(str(model_dir))}}}\n"
                    "    batch: {max_size: 64, max_wait_ms: 0}\n")
    return path


def extract_revision(rev: str) -> Path:
    """The tree of git revision ``rev`` under bench/tmp/ (made once per commit)."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    target = TMP / f"rev-{commit[:12]}"
    if not (target / "expertd" / "__init__.py").exists():
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target


def parse_importtime(stderr: str) -> dict[str, tuple[int, int]]:
    """``module -> (depth, cumulative µs)`` from ``-X importtime`` output."""
    modules: dict[str, tuple[int, int]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        modules[name.strip()] = (depth, int(cumulative))
    return modules


def importtime(command: list[str], env: dict, stdin: bytes, runs: int) -> dict:
    """The median cumulative import time of each module ``command`` imports, over ``runs``."""
    seen: list[dict[str, tuple[int, int]]] = []
    for _ in range(runs):
        done = subprocess.run([PYTHON, "-X", "importtime", *command], input=stdin, env=env,
                              capture_output=True, cwd=ROOT, timeout=60)
        seen.append(parse_importtime(done.stderr.decode(errors="replace")))
    names = list(seen[-1])
    return {name: (seen[-1][name][0], median(s[name][1] for s in seen if name in s))
            for name in names}


def tree_lines(modules: dict, floor: set[str], min_us: float) -> list[str]:
    """The import tree beyond ``floor`` (modules ``python -c pass`` imports) in Python's
    order (a module after what it imports), those under ``min_us`` left out."""
    lines = []
    for name, (depth, cumulative) in modules.items():
        if name in floor or cumulative < min_us:
            continue
        lines.append(f"{cumulative / 1000:7.2f} ms  {'  ' * depth}{name}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=40, help="rounds (one process of each arm)")
    parser.add_argument("--baseline", help="git revision whose stage runs beside this one")
    parser.add_argument("--importtime-runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS-startup.md")
    args = parser.parse_args()

    env = child_env()
    arms: dict[str, tuple[list[str], dict, bytes]] = {
        "floor": ([PYTHON, "-c", "pass"], env, b""),
        "floor+re": ([PYTHON, "-c", "import re"], env, b""),
    }
    trees: dict[str, dict] = {}
    with Fleet() as fleet:
        server = fleet.expertd("startup-sentiment", sentiment_config())
        fleet.wait_ready([server])
        stage_cmd = [EXPERTD, "pipe", "sentiment", "--endpoint", server.url]
        arms["stage"] = (stage_cmd, env, DOCUMENT)
        if args.baseline:
            tree = extract_revision(args.baseline)
            arms[f"stage@{args.baseline}"] = (stage_cmd, child_env(PYTHONPATH=str(tree)), DOCUMENT)
        for command, arm_env, stdin in arms.values():  # untimed: bytecode caches, warm server
            for _ in range(2):
                run_child(command, stdin, env=arm_env)
        floor_modules = set(parse_importtime(subprocess.run(
            [PYTHON, "-X", "importtime", "-c", "pass"], env=env, capture_output=True,
            text=True).stderr))
        for name, (command, arm_env, stdin) in arms.items():
            if name.startswith("stage"):
                trees[name] = importtime(command, arm_env, stdin, args.importtime_runs)
        samples: dict[str, list[float]] = {name: [] for name in arms}
        cpu: dict[str, list[float]] = {name: [] for name in arms}
        names = list(arms)
        began = time.time()
        for round_no in range(args.pairs):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                command, arm_env, stdin = arms[name]
                run = run_child(command, stdin, env=arm_env)
                if name.startswith("stage") and (run.returncode != 0 or b'"sentiment"' not in run.stdout):
                    raise RuntimeError(f"{name} failed: {run.returncode} {run.stderr[-800:]!r}")
                samples[name].append(run.seconds * 1000.0)
                cpu[name].append(run.cpu_seconds * 1000.0)
        elapsed = time.time() - began
    load = os.getloadavg()
    write_report(args, samples, cpu, trees, floor_modules, elapsed, load)
    print(args.out.read_text())


def write_report(args, samples: dict, cpu: dict, trees: dict, floor_modules: set,
                 elapsed: float, load: tuple) -> None:
    """bench/RESULTS-startup.md: the pair timings, CPU times and the import trees."""
    floor, floor_cpu = samples["floor"], cpu["floor"]
    rows = []
    for name, values in samples.items():
        over = median(v - f for v, f in zip(values, floor))
        cpu_over = median(c - f for c, f in zip(cpu[name], floor_cpu))
        rows.append([f"`{name}`", fmt(median(values), 1), fmt(min(values), 1),
                     "" if name == "floor" else fmt(over, 1), fmt(median(cpu[name]), 1),
                     "" if name == "floor" else fmt(cpu_over, 1)])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# The one-document stage's start-up",
        "",
        f"`python -m bench.startup --pairs {args.pairs}"
        + (f" --baseline {args.baseline}" if args.baseline else "") + f"` on {os.uname().nodename} "
        f"({os.cpu_count()} cores), {when}, {elapsed:.0f} s; load average when it ended "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (the machine is shared: only the "
        "columns of one run compare). One `expertd serve` holding the sentiment model; "
        f"{args.pairs} interleaved rounds, the order rotated each round; each process timed "
        "from spawn to exit. `over floor` is the median over rounds of (arm - `floor`) "
        "in the same round. CPU is user + system time of the process and its children "
        "(`wait4`), which a busy machine disturbs less than wall time.",
        "",
        *table(["arm", "median ms", "min ms", "over floor (ms, median of pairs)",
                "CPU ms (median)", "CPU over floor (ms, median of pairs)"], rows),
        "",
        "`floor+re` is the start plus `import re`, which pip's generated `expertd` script "
        "does before any expertd code runs (and with it enum, functools, collections).",
        "",
    ]
    for name, modules in trees.items():
        extra = {m: v for m, v in modules.items() if m not in floor_modules}
        top = sum(cum for depth, cum in extra.values() if depth == 0)
        lines += [
            f"## `python -X importtime` of `{name}` (one document, through the console script)",
            "",
            f"{len(extra)} modules beyond `python -c pass`; their top-level imports add up to "
            f"{top / 1000:.1f} ms (cumulative, median of {args.importtime_runs} runs; "
            "children under 0.3 ms left out).",
            "",
            "```",
            *tree_lines(modules, floor_modules, 300),
            "```",
            "",
        ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
