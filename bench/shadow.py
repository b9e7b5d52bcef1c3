"""What shadowing costs the serving path: p50/p99 with and without a shadow version, side by side.

    .venv/bin/python -m bench.shadow [--rounds 7] [--calls 300] [--quick]

One real ``expertd serve`` of sentiment with versions 2 and 3 (two copies of
models/sentiment in bench/tmp/, so the shadow does the same work as the
serving version), vader beside it. Arms, each a block of ``--calls`` calls of
``opinions(doc, ["sentiment"])`` per round:

  no shadow      the policy off (``expert_policy(sentiment, {"shadow": null})``)
  shadow 3       every call also runs version 3, off the caller's path

for one caller in sequence and for 8 callers at once (threads, a connection
each). The policy is switched between blocks and the order of the arms
alternates round by round, so a change in the machine's load falls on both;
a figure is the median over rounds of each block's p50 or p99. Writes
``bench/RESULTS-shadow.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from datetime import datetime, timezone

from bench.common import BENCH, ROOT, TMP, load_texts, median, percentile, ratio
from bench.machine import machine
from bench.report import fmt, table, times
from bench.servers import Fleet

RESULTS = BENCH / "RESULTS-shadow.md"
ARMS = {"no shadow": None, "shadow 3": "3"}
CALLERS = 8


def versioned_config() -> str:
    """bench/tmp/shadow/experts.yaml: sentiment versions 2 and 3 (copies), and vader."""
    folder = TMP / "shadow"
    shutil.rmtree(folder, ignore_errors=True)
    for version in ("2", "3"):
        shutil.copytree(ROOT / "models" / "sentiment", folder / "models" / "sentiment" / version)
    path = folder / "experts.yaml"
    path.write_text("experts:\n"
                    "  sentiment:\n"
                    "    expert: expertd.experts.keras_text:SentimentExpert\n"
                    "    options: {model_dir: models/sentiment}\n"
                    "    versions: [2, 3]\n"
                    "    batch: {max_size: 64, max_wait_ms: 0}\n"
                    "  vader:\n"
                    "    expert: expertd.experts.vader:VaderExpert\n")
    return path


def block(connections, texts, calls: int, cursor: int) -> list[float]:
    """``calls`` calls spread over ``connections`` (one thread each); every call's ms, sorted."""
    samples: list[float] = []
    lock = threading.Lock()

    def caller(index: int, connection) -> None:
        mine = []
        for i in range(index, calls, len(connections)):
            doc = {"text": texts[(cursor + i) % len(texts)]}
            began = time.perf_counter()
            connection.call("opinions", doc, ["sentiment"])
            mine.append((time.perf_counter() - began) * 1000.0)
        with lock:
            samples.extend(mine)

    if len(connections) == 1:
        caller(0, connections[0])
    else:
        threads = [threading.Thread(target=caller, args=(i, c)) for i, c in enumerate(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sorted(samples)


def measure(admin, pools: dict, texts, rounds: int, calls: int) -> dict:
    """Per pool (callers) and arm: the rounds' p50s and p99s."""
    runs = {pool: {arm: [] for arm in ARMS} for pool in pools}
    cursor = 0
    for r in range(rounds):
        order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
        for pool, connections in pools.items():
            for arm in order:
                admin.call("expert_policy", "sentiment", {"shadow": ARMS[arm]})
                time.sleep(0.2)  # what the other arm's shadow had queued is done
                values = block(connections, texts, calls, cursor)
                cursor += calls
                runs[pool][arm].append((percentile(values, 50), percentile(values, 99)))
    admin.call("expert_policy", "sentiment", {"shadow": None})
    return {pool: {arm: {"p50_ms": median(p50 for p50, _ in r), "p99_ms": median(p99 for _, p99 in r),
                         "p99_runs": [round(p99, 3) for _, p99 in r]}
                   for arm, r in arms.items()} for pool, arms in runs.items()}


def report(results: dict) -> str:
    """The Markdown of ``bench/RESULTS-shadow.md``."""
    lines = ["# Shadowing: what a shadow version costs the serving path", "",
             f"`python -m bench.shadow` on {results['when']}; {results['machine_line']}.", "",
             "One real `expertd serve` (one process) of sentiment with versions 2 and 3 (the same "
             "model twice, so the shadow does as much work as the serving version) and vader. "
             f"Each round runs a block of {results['calls']} calls of `opinions(doc, [\"sentiment\"])` "
             "per arm, switching the policy with `expert_policy` between blocks and alternating "
             f"which arm goes first; {results['rounds']} rounds; each figure is the median over "
             "rounds of a block's percentile.", "",
             "## p99 with and without a shadow", ""]
    rows = []
    for pool, arms in results["pools"].items():
        base = arms["no shadow"]
        for arm, numbers in arms.items():
            rows.append([pool, arm, fmt(numbers["p50_ms"], 3), fmt(numbers["p99_ms"], 3),
                         times(ratio(numbers["p99_ms"], base["p99_ms"]), 2)])
    lines += table(["callers", "arm", "p50 ms", "p99 ms", "p99 vs no shadow"], rows)
    lines += ["", "Each round's p99 (ms), to show the spread on this machine:", ""]
    lines += [f"- {pool}, {arm}: {', '.join(fmt(v, 1) for v in numbers['p99_runs'])}"
              for pool, arms in results["pools"].items() for arm, numbers in arms.items()]
    one = results["pools"]["1 caller"]
    lines += ["", f"With one caller, the shadow moves p99 from {fmt(one['no shadow']['p99_ms'], 3)} ms "
              f"to {fmt(one['shadow 3']['p99_ms'], 3)} ms "
              f"(**{times(ratio(one['shadow 3']['p99_ms'], one['no shadow']['p99_ms']), 2)}**).", "",
              "## Reading it", "",
              "The caller never waits for the shadow (it runs in a greenlet after the answer is "
              "made), so what it costs is the CPU it takes from the next calls: on 2 cores, a "
              "shadow of the same size as the serving model is a second model call per call. "
              "A smaller or cheaper shadow costs less; a shadow whose queue is half full is "
              "skipped, so the serving path never queues behind it. The machine is shared: "
              "when the rounds' p99s spread wider than the gap between the arms (as in the list "
              "above), the gap is noise; compare runs made side by side like this one, never "
              "figures from different runs.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the arms and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 50 calls (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls = 2, 50
    from expertd.clients.wire import Connection

    texts = load_texts()
    with Fleet() as fleet:
        server = fleet.expertd("expertd-shadow", versioned_config())
        fleet.wait_ready([server])
        connections = [Connection(server.url, timeout=60) for _ in range(CALLERS + 1)]
        try:
            admin = connections[0]
            for _ in range(50):  # warm both versions
                admin.call("opinions", {"text": texts[0]}, ["sentiment", "sentiment@3"])
            pools = {"1 caller": connections[1:2], f"{CALLERS} callers": connections[1:]}
            results = {"pools": measure(admin, pools, texts, args.rounds, args.calls)}
        finally:
            for connection in connections:
                connection.close()
    m = machine()
    results.update(rounds=args.rounds, calls=args.calls,
                   when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   machine_line=f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores")
    RESULTS.write_text(report(results))
    print(json.dumps(results["pools"], indent=1))
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
