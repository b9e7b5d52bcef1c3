"""What a chain costs: ``consensus`` (which needs ``sentiment`` and ``vader``) against asking
those experts one by one in one ``opinions`` call.

    .venv/bin/python -m bench.chains [--rounds 7] [--calls 300] [--docs 256] [--quick]

One real ``expertd serve`` of the default experts file; one lean client
(``clients.wire``) calling in sequence, so each number is the server's cost of
one request plus one loopback round trip. The arms run interleaved in rounds
call by call (A, B, C, D, A, ...); a row is the median over rounds of each
round's median. Writes ``bench/RESULTS-chains.md``.

Arms, one document per call:
  chain        opinions(doc, ["consensus"])                 sentiment + vader + consensus
  flat         opinions(doc, ["sentiment", "vader"])         the experts it builds on, no chain
  named        opinions(doc, ["sentiment", "vader", "consensus"])   the same work, all named
  two calls    opinions(doc, ["sentiment", "vader"]), then opinions(that, ["consensus"])
               (a second pipe stage: consensus reuses the opinions the document carries)
and the same for ``opinions_batch`` of ``--docs`` documents (documents/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone

from bench.common import BENCH, DEFAULT_CONFIG, load_texts, median, percentile, ratio
from bench.machine import machine
from bench.report import fmt, table, times
from bench.servers import Fleet

RESULTS = BENCH / "RESULTS-chains.md"
CHAIN = ["consensus"]
FLAT = ["sentiment", "vader"]
NAMED = ["sentiment", "vader", "consensus"]
#: ``opinions_batch`` calls per arm and round.
BATCH_CALLS = 15


def one_doc_arms(connection, texts):
    """The single-document arms: each takes a document and makes its call(s)."""
    return {
        "chain": lambda doc: connection.call("opinions", doc, CHAIN),
        "flat": lambda doc: connection.call("opinions", doc, FLAT),
        "named": lambda doc: connection.call("opinions", doc, NAMED),
        "two calls": lambda doc: connection.call(
            "opinions", connection.call("opinions", doc, FLAT), CHAIN),
    }


def batch_arms(connection):
    """The same arms over ``opinions_batch``."""
    return {
        "chain": lambda docs: connection.call("opinions_batch", docs, CHAIN),
        "flat": lambda docs: connection.call("opinions_batch", docs, FLAT),
        "named": lambda docs: connection.call("opinions_batch", docs, NAMED),
        "two calls": lambda docs: connection.call(
            "opinions_batch", connection.call("opinions_batch", docs, FLAT), CHAIN),
    }


def rotated(arms: list[str], turn: int) -> list[str]:
    """The arms in turn order for call ``turn``, so that none is always first."""
    k = turn % len(arms)
    return arms[k:] + arms[:k]


def measure(connection, texts, rounds: int, calls: int, docs: int) -> dict:
    """Rounds of every arm, interleaved call by call; per arm the rounds' medians and p99s.

    Within a round the arms take turns one call at a time (A, B, C, D, A, ...),
    so a change in the machine's load falls on every arm alike; the order rotates
so that no arm always goes first. A batch arm's rate is its documents over the
median time of its calls in the round.
    """
    singles = one_doc_arms(connection, texts)
    batches = batch_arms(connection)
    latency: dict[str, list[tuple[float, float]]] = {arm: [] for arm in singles}
    rate: dict[str, list[float]] = {arm: [] for arm in batches}
    cursor = 0
    for _ in range(rounds):
        samples: dict[str, list[float]] = {arm: [] for arm in singles}
        for i in range(calls):
            doc = {"text": texts[cursor % len(texts)]}
            cursor += 1
            for arm in rotated(list(singles), i):
                began = time.perf_counter()
                singles[arm](doc)
                samples[arm].append((time.perf_counter() - began) * 1000.0)
        for arm, values in samples.items():
            values.sort()
            latency[arm].append((percentile(values, 50), percentile(values, 99)))
        seconds: dict[str, list[float]] = {arm: [] for arm in batches}
        for i in range(BATCH_CALLS):
            batch = [{"text": texts[(cursor + j) % len(texts)]} for j in range(docs)]
            cursor += docs
            for arm in rotated(list(batches), i):
                began = time.perf_counter()
                batches[arm](batch)
                seconds[arm].append(time.perf_counter() - began)
        for arm in batches:
            rate[arm].append(docs / median(seconds[arm]))
    return {
        "single": {arm: {"p50_ms": median(p50 for p50, _ in runs),
                         "p99_ms": median(p99 for _, p99 in runs),
                         "p50_runs": [round(p50, 3) for p50, _ in runs]}
                   for arm, runs in latency.items()},
        "batch": {arm: {"docs_per_s": median(runs), "runs": [round(r) for r in runs]}
                  for arm, runs in rate.items()},
    }


def computed_once(connection, texts) -> dict:
    """How many opinions each expert computed for one chain call (from ``stats()``)."""
    before = connection.call("stats")["experts"]
    connection.call("opinions", {"text": texts[0] + " (counted)"}, CHAIN)
    after = connection.call("stats")["experts"]
    return {name: after[name]["items"] - before[name]["items"] for name in after}


def report(results: dict) -> str:
    """The Markdown of ``bench/RESULTS-chains.md``."""
    s, b = results["single"], results["batch"]
    flat_p50 = s["flat"]["p50_ms"]
    lines = ["# Chains: the cost of `consensus` against asking its experts one by one", "",
             f"`python -m bench.chains` on {results['when']}; {results['machine_line']}.", "",
             "One real `expertd serve` of `config/experts.yaml` (sentiment and genre are Keras, "
             "vader is rule-based, consensus needs sentiment and vader); one lean client "
             "calling in sequence. The arms take turns call by call "
             f"(A, B, C, D, then B, C, D, A, ...) in {results['rounds']} rounds; each figure is "
             f"the median over the rounds ({results['calls']} calls per arm and round for one document; "
             f"{BATCH_CALLS} calls of {results['docs']} documents for the batch).", "",
             "## One document per call", ""]
    rows = []
    for arm, call in (("chain", "`opinions(doc, [\"consensus\"])`"),
                      ("flat", "`opinions(doc, [\"sentiment\", \"vader\"])`"),
                      ("named", "`opinions(doc, [\"sentiment\", \"vader\", \"consensus\"])`"),
                      ("two calls", "flat, then `opinions(that, [\"consensus\"])` (reuses)")):
        rows.append([arm, call, fmt(s[arm]["p50_ms"], 3), fmt(s[arm]["p99_ms"], 3),
                     times(ratio(s[arm]["p50_ms"], flat_p50), 2)])
    lines += table(["arm", "call", "p50 ms", "p99 ms", "p50 vs flat"], rows)
    lines += ["", "## Many documents per call (`opinions_batch`)", ""]
    flat_rate = b["flat"]["docs_per_s"]
    rows = [[arm, fmt(b[arm]["docs_per_s"], 0), times(ratio(flat_rate, b[arm]["docs_per_s"]), 2)]
            for arm in b]
    lines += table(["arm", "documents/s", "time vs flat"], rows)
    once = results["computed_once"]
    lines += ["", "## Each needed expert computed once", "",
              "Opinions each expert computed for one `opinions(doc, [\"consensus\"])` call "
              f"(from `stats()`): {', '.join(f'{k} {v}' for k, v in once.items())}.", "",
              "## Reading it", "",
              f"- A chain costs **{times(ratio(s['chain']['p50_ms'], flat_p50), 2)}** the time of asking "
              f"its two experts in one call ({fmt(s['chain']['p50_ms'], 3)} ms against "
              f"{fmt(flat_p50, 3)} ms at p50): the extra is consensus's own turn, which can only "
              "start once both judges have answered.",
              f"- Naming the experts yourself (`named`) makes the server run the same plan: "
              f"{times(ratio(s['named']['p50_ms'], s['chain']['p50_ms']), 2)} the chain's time.",
              f"- Two calls, as two pipe stages would make them, cost "
              f"{times(ratio(s['two calls']['p50_ms'], s['chain']['p50_ms']), 2)} the chain.",
              "", "Per-round p50s (ms): " + "; ".join(
                  f"{arm} {s[arm]['p50_runs']}" for arm in s), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the server, measure, write ``bench/RESULTS-chains.md``."""
    parser = argparse.ArgumentParser(prog="python -m bench.chains")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 50 calls (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.docs = 2, 50, 64
    from expertd.clients.wire import Connection

    texts = load_texts()
    with Fleet() as fleet:
        server = fleet.expertd("expertd-chains", DEFAULT_CONFIG)
        fleet.wait_ready([server])
        with Connection(server.url, timeout=60) as connection:
            for _ in range(50):  # warm every path
                connection.call("opinions", {"text": texts[0]}, NAMED)
            results = measure(connection, texts, args.rounds, args.calls, args.docs)
            results["computed_once"] = computed_once(connection, texts)
    m = machine()
    results.update(rounds=args.rounds, calls=args.calls, docs=args.docs,
                   when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   machine_line=f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores")
    RESULTS.write_text(report(results))
    print(json.dumps({"single": results["single"], "batch": results["batch"]}, indent=1))
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
