"""Benchmark of the learning expert: accuracy learned online, and opinions while it learns.

Run as ``python -m bench.learning`` (``make bench`` does). Against real
``expertd serve`` processes (experts file in bench/tmp/learning/, a fresh
state directory each run) it measures:

1. **Learning curve**: the VADER ground-truth training split (the fixed 90/10
   split the Keras ``genre`` model was trained on, ``experts.train.split``)
   is taught to the ``learner`` expert through real ``learn`` calls of 256
   examples, in the split's order; after 250, 500, 1k, 2k, 5k, 10k and all
   examples its held-out accuracy at naming the source (tweet, movie review,
   product review, news editorial) is measured through ``batch`` calls, next
   to the Keras ``genre`` expert trained offline (models/genre/metrics.json).
2. **Opinions while learning**: one-document ``opinion`` latency (sequential
   calls) with and without a concurrent ``expertd learn`` stream, interleaved
   A/B rounds, medians of each round's p50/p99.
3. **Copies in step**: a second server on the same state directory; the time
   from a ``learn`` acknowledged by one server until the other reports the
   same ``model_version``.

Writes bench/RESULTS-learning.md and bench/learning.png.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BENCH, EXPERTD, ROOT, TMP, child_env, free_port, median, percentile
from expertd.clients.wire import CallTimeout, ServerUnavailable, connect

WORK = TMP / "learning"
CHECKPOINTS = [250, 500, 1000, 2000, 5000, 10000]
TEACH_BATCH = 256
ROUNDS = 5
CALLS_PER_ROUND = 400
CONFIG = """
server:
  state_dir: state
experts:
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {checkpoint_every: 5000, checkpoint_seconds: 60}
"""


def start_server(config: Path, name: str) -> tuple[subprocess.Popen, str]:
    """Start ``expertd serve`` and wait until it answers ``health``."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = open(WORK / f"{name}.log", "wb")
    process = subprocess.Popen([EXPERTD, "serve", "--config", str(config), "--bind", endpoint,
                                "--log-level", "warning"], cwd=ROOT, env=child_env(),
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server {name} exited: see {WORK / (name + '.log')}")
        try:
            with connect(endpoint, timeout=2.0) as c:
                c.call("health")
                return process, endpoint
        except (ServerUnavailable, CallTimeout):
            time.sleep(0.2)
    raise RuntimeError(f"server {name} not ready")


def state_of(connection) -> dict:
    """The learner's ``learning`` state from ``experts()``."""
    return next(e for e in connection.call("experts") if e["name"] == "learner")["learning"]


def heldout_accuracy(connection, heldout: list) -> float:
    """Share of held-out sentences whose source the learner names, asked through ``batch``."""
    right = 0
    for start in range(0, len(heldout), 512):
        chunk = heldout[start:start + 512]
        answers = connection.call("batch", "learner", [{"text": t} for t, _, _ in chunk])
        right += sum(a["label"] == source for a, (_, _, source) in zip(answers, chunk))
    return right / len(heldout)


def learning_curve(connection, train: list, heldout: list) -> dict:
    """Teach ``train`` in order through ``learn`` calls; accuracy at each checkpoint."""
    points, taught, teach_seconds = [], 0, 0.0
    marks = [m for m in CHECKPOINTS if m < len(train)] + [len(train)]
    for mark in marks:
        while taught < mark:
            chunk = train[taught:min(mark, taught + TEACH_BATCH)]
            began = time.perf_counter()
            result = connection.call("learn", "learner",
                                     [{"text": t, "label": source} for t, _, source in chunk])
            teach_seconds += time.perf_counter() - began
            assert result["accepted"] == len(chunk) and not result["refused"], result
            taught += len(chunk)
        points.append({"examples": taught, "accuracy": heldout_accuracy(connection, heldout)})
        print(f"  after {taught:6d} examples: held-out accuracy {points[-1]['accuracy']:.4f}",
              file=sys.stderr)
    state = state_of(connection)
    return {"points": points, "teach_seconds": teach_seconds,
            "examples_per_s": taught / teach_seconds, "state": state}


def opinion_latencies(endpoint: str, texts: list[str]) -> list[float]:
    """Milliseconds of ``CALLS_PER_ROUND`` sequential one-document opinions."""
    out = []
    with connect(endpoint, timeout=30) as c:
        for i in range(CALLS_PER_ROUND):
            began = time.perf_counter()
            c.call("opinion", "learner", {"text": texts[i % len(texts)]})
            out.append((time.perf_counter() - began) * 1000.0)
    return sorted(out)


def serving_while_learning(endpoint: str, train: list) -> dict:
    """Interleaved rounds: opinions alone, then opinions while ``expertd learn`` streams."""
    stream = WORK / "stream.jsonl"
    with open(stream, "w") as f:
        for text, _, source in train:
            f.write(json.dumps({"text": text, "label": source}) + "\n")
    texts = [t for t, _, _ in train[:CALLS_PER_ROUND]]
    arms = {"idle": [], "learning": []}
    streamed = []
    for _ in range(ROUNDS):
        arms["idle"].append(opinion_latencies(endpoint, texts))
        with open(stream) as stdin:
            teacher = subprocess.Popen([EXPERTD, "learn", "learner", "--endpoint", endpoint,
                                        "--batch-size", "64"], stdin=stdin,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       env=child_env(), text=True)
            time.sleep(0.3)  # the stream is under way
            before = time.perf_counter()
            arms["learning"].append(opinion_latencies(endpoint, texts))
            elapsed = time.perf_counter() - before
            alive = teacher.poll() is None
            teacher.kill()
            teacher.wait()
            streamed.append({"alive_throughout": alive, "seconds": elapsed})
    rows = {}
    for arm, rounds in arms.items():
        rows[arm] = {"p50_ms": median(percentile(r, 50) for r in rounds),
                     "p99_ms": median(percentile(r, 99) for r in rounds),
                     "p99_runs": [round(percentile(r, 99), 2) for r in rounds]}
    rows["stream_alive_throughout"] = all(s["alive_throughout"] for s in streamed)
    return rows


def copies_in_step(first: str, second: str, train: list, samples: int = 20) -> dict:
    """Seconds from a ``learn`` acknowledged by ``first`` until ``second`` has applied it."""
    delays = []
    with connect(first, timeout=30) as a, connect(second, timeout=30) as b:
        for i in range(samples):
            text, _, source = train[i]
            version = a.call("learn", "learner", [{"text": text, "label": source}])["state"]
            began = time.perf_counter()
            while state_of(b)["model_version"] < version["model_version"]:
                time.sleep(0.005)
            delays.append(time.perf_counter() - began)
            time.sleep(0.05)
        probes = [{"text": t} for t, _, _ in train[1000:1200]]
        identical = a.call("batch", "learner", probes) == b.call("batch", "learner", probes)
    delays.sort()
    return {"median_ms": median(delays) * 1000, "max_ms": delays[-1] * 1000,
            "samples": samples, "identical_opinions": identical}


def draw(curve: dict, keras_accuracy: float, path: Path) -> None:
    """The learning curve next to the offline Keras model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["examples"] for p in curve["points"]]
    ys = [p["accuracy"] for p in curve["points"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    ax.plot(xs, ys, marker="o", label="learner (river naive Bayes, taught online via learn)")
    ax.axhline(keras_accuracy, color="gray", linestyle="--",
               label=f"genre (Keras, trained offline): {keras_accuracy:.3f}")
    ax.axhline(0.25, color="lightgray", linestyle=":", label="chance (4 sources)")
    ax.set_xscale("log")
    ax.set_xlabel("labelled examples taught")
    ax.set_ylabel("held-out accuracy (source of the sentence)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Learning while serving: VADER ground truth, 4 sources")
    fig.tight_layout()
    fig.savefig(path)


def write_report(curve, keras, serving, step, machine: str) -> str:
    """The Markdown report."""
    pts = {p["examples"]: p["accuracy"] for p in curve["points"]}
    total = curve["points"][-1]["examples"]
    lines = [
        "# Learning benchmark (`python -m bench.learning`)", "",
        f"Machine: {machine}. One run; medians of {ROUNDS} interleaved rounds where stated.", "",
        "## Accuracy learned online vs. the Keras model trained offline", "",
        "The `learner` expert (experts/online.py: river `BagOfWords | MultinomialNB`) starts "
        "knowing nothing and is taught the VADER ground-truth training split "
        f"({total:,} sentences, the fixed split `genre` was trained on) through real `learn` "
        f"calls of {TEACH_BATCH} to a real server; held-out accuracy (2,368 sentences) at naming "
        "the source is asked through `batch` calls.", "",
        "| examples taught | held-out accuracy |", "|---:|---:|",
        *[f"| {n:,} | {a:.4f} |" for n, a in pts.items()],
        f"| Keras `genre`, offline, 5 epochs (models/genre/metrics.json) | {keras:.4f} |", "",
        f"After 1k examples: **{pts.get(1000, float('nan')):.3f}**; after 5k: "
        f"**{pts.get(5000, float('nan')):.3f}**; after all {total:,}: **{pts[total]:.3f}** "
        f"({pts[total] / keras:.1%} of the Keras model's {keras:.3f}).", "",
        f"Progressive accuracy reported by `experts()` (predict, then learn, over the stream): "
        f"**{curve['state']['progressive_accuracy']:.4f}** over {curve['state']['updates']:,} updates.",
        "",
        f"Teaching throughput: {curve['examples_per_s']:,.0f} examples/s acknowledged "
        f"(durably in the SQLite log and applied), {curve['teach_seconds']:.1f} s for all.", "",
        "![learning curve](learning.png)", "",
        "## One-document opinions with and without a concurrent learn stream", "",
        f"{CALLS_PER_ROUND} sequential `opinion(\"learner\", doc)` calls per round, a lean "
        "client; in the `learning` arm an `expertd learn learner --batch-size 64` process "
        "streams the training split at full speed meanwhile.", "",
        "| arm | p50 ms | p99 ms | p99 of each round |", "|---|---:|---:|---|",
        *[f"| {arm} | {serving[arm]['p50_ms']:.2f} | {serving[arm]['p99_ms']:.2f} | "
          f"{', '.join(map(str, serving[arm]['p99_runs']))} |" for arm in ("idle", "learning")],
        "",
        f"p99 ratio learning/idle: **{serving['learning']['p99_ms'] / serving['idle']['p99_ms']:.2f}x**"
        f" (stream still running at the end of every round: {serving['stream_alive_throughout']}).",
        "",
        "## Two servers on one feedback log", "",
        f"Second server on the same state directory; {step['samples']} single-example `learn` "
        "calls to the first; time from the acknowledgement until the second reports the same "
        f"`model_version`: median **{step['median_ms']:.0f} ms**, max **{step['max_ms']:.0f} ms** "
        f"(poll interval 150 ms). Identical opinions on 200 documents afterwards: "
        f"{step['identical_opinions']}.", "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Run every section and write the report and the picture."""
    from importlib.metadata import version

    from bench.machine import machine, now
    from expertd.experts.data import load_ground_truth
    from expertd.experts.train import split

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    config = WORK / "experts.yaml"
    config.write_text(CONFIG)
    train, heldout = split(load_ground_truth(ROOT / "data"))
    keras = json.loads((ROOT / "models" / "genre" / "metrics.json").read_text())["heldout_accuracy"]
    servers = []
    try:
        process, endpoint = start_server(config, "first")
        servers.append(process)
        print("learning curve", file=sys.stderr)
        with connect(endpoint, timeout=120) as connection:
            curve = learning_curve(connection, train, heldout)
        print("opinions with and without a learn stream", file=sys.stderr)
        serving = serving_while_learning(endpoint, train)
        print("two servers on one log", file=sys.stderr)
        second, second_endpoint = start_server(config, "second")
        servers.append(second)
        step = copies_in_step(endpoint, second_endpoint, train)
    finally:
        for process in servers:
            process.terminate()
            process.wait(60)
    draw(curve, keras, BENCH / "learning.png")
    m = machine()
    described = (f"{m['cpu']}, {m['usable_cores']} usable cores, {m['ram_gib']} GiB, {m['os']}, "
                 f"Python {m['python']}, river {version('river')}, zerorpc {m['zerorpc']}; {now()}")
    report = write_report(curve, keras, serving, step, described)
    (BENCH / "RESULTS-learning.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
