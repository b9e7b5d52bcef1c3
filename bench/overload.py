"""Overload through the HTTP bridge: ``python -m bench.overload``.

Writes ``bench/RESULTS-overload.md`` and the picture ``bench/latency.png``.
Every server is started here (``bench.servers.Fleet``): one ``expertd serve``
with the default experts file, Express bridges in front of it (one per
coalescer-queue bound measured), and Falcon + bjoern (``bench/falcon_app.py``)
with the same Keras model called inline. Load is POST ``/experts/sentiment``
with real sentences. Constant-rate load comes from ``bench/constant_rate.js``
(open loop; latency counted from when each request was due, as wrk2 does).

1. **Capacity and unloaded latency**: closed-loop ``wrk -c256`` gives each
   server's capacity (answered requests/s); 50 requests/s gives the unloaded
   p50/p99.
2. **The overload row**: about twice the bridge's capacity offered for 10 s:
   goodput (200s per second) as a share of capacity, p99 of the answered
   requests against the unloaded p99, the share answered 503, and the
   resident memory of the server and of the bridge before and after.
3. **Latency vs throughput**: constant rates from a tenth of capacity to
   beyond it, bridge and bjoern interleaved at each rate; p50/p99 of answered
   requests and the goodput, drawn in ``bench/latency.png``.
4. **One document during a big batch**: the one-document p99 through the
   bridge at a light constant rate while 100,000-document ``batch`` calls run
   back to back on the same expert, next to the unloaded p99 (interleaved).
   ``python -m bench.overload --one-document`` runs only this section (one
   server, one bridge) and prints its table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from bench.common import BENCH, DEFAULT_CONFIG, ROOT, TMP, load_texts, median, tree_kib
from bench.servers import Fleet
from bench.web import run_wrk, write_bodies

RESULTS = BENCH / "RESULTS-overload.md"
PICTURE = BENCH / "latency.png"
GENERATOR = BENCH / "constant_rate.js"
PATH = "/experts/sentiment"
#: Bounds of the bridge's coalescer queue measured in the overload row (the first is the default).
QUEUE_BOUNDS = (256, 64, 16)
UNLOADED_RATE = 50
OVERLOAD_SECONDS = 10
OVERLOAD_ROUNDS = 2
CURVE_SECONDS = 4
CURVE_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5)
BIG_BATCH = 100_000
BIG_BATCH_ROUNDS = 3
BIG_BATCH_SECONDS = 8


class LoadError(RuntimeError):
    """The constant-rate generator failed or printed no result."""


def constant_rate(url: str, rate: float, seconds: float, bodies: Path, connections: int = 512) -> dict:
    """Offer ``rate`` requests/s to ``url`` for ``seconds``; the generator's summary."""
    command = ["node", str(GENERATOR), url, f"{rate:.1f}", str(seconds), str(bodies), str(connections)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    raw = json.loads(line[len("BENCH_JSON "):])
    ok = raw["statuses"].get("200", {"count": 0, "p50_ms": None, "p99_ms": None})
    shed = raw["statuses"].get("503", {"count": 0})
    answered_s = raw["elapsed_s"]
    return {
        "rate": rate,
        "offered_rps": raw["offered_rps"],
        "requests": raw["requests"],
        "ok": ok["count"],
        "goodput_rps": ok["count"] / seconds,
        "p50_ms": ok["p50_ms"],
        "p99_ms": ok["p99_ms"],
        "shed_503": shed["count"],
        "other": raw["requests"] - ok["count"] - shed["count"],
        "errors": raw["errors"] + raw["unanswered"],
        "elapsed_s": answered_s,
        "statuses": {k: v["count"] for k, v in raw["statuses"].items()},
        "error_names": raw.get("error_names", {}),
        "p99_all_ms": raw["all"]["p99_ms"],
    }


@contextmanager
def environment(**values: str):
    """Set environment variables for the processes started inside the block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mib(kib: int | None) -> float | None:
    """KiB -> MiB."""
    return None if kib is None else kib / 1024.0


def memory(server, bridge) -> dict:
    """Resident memory (MiB) of the server's and the bridge's process trees."""
    return {"server": mib(tree_kib(server.pid, "VmRSS")), "bridge": mib(tree_kib(bridge.pid, "VmRSS"))}


def big_batches(endpoint: str, texts: list[str], stop: threading.Event, log: list) -> None:
    """Send ``batch("sentiment", 100,000 docs)`` back to back until ``stop``; record each call's seconds."""
    from clients.wire import connect

    docs = [{"text": texts[i % len(texts)]} for i in range(BIG_BATCH)]
    with connect(endpoint, timeout=120.0) as connection:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answers = connection.call("batch", "sentiment", docs, timeout=120.0)
                log.append({"seconds": time.monotonic() - started, "docs": len(answers)})
            except Exception as err:  # noqa: BLE001 - recorded and reported, never hidden
                log.append({"seconds": time.monotonic() - started, "error": f"{type(err).__name__}: {err}"})
                time.sleep(0.5)


def measure() -> dict:
    """Run every section; the raw numbers."""
    texts = load_texts()
    bodies = write_bodies(texts, TMP / "overload-bodies.jsonl", count=2000)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                             "node": subprocess.run(["node", "--version"], capture_output=True,
                                                    text=True).stdout.strip()}}
    with Fleet() as fleet:
        server = fleet.expertd("expertd", DEFAULT_CONFIG)
        bjoern = fleet.bjoern()
        fleet.wait_ready([server, bjoern])
        bridges = {}
        for bound in QUEUE_BOUNDS:
            with environment(LOG_LEVEL="warn", COALESCE_MAX_QUEUE=str(bound)):
                bridges[bound] = fleet.bridge(server.url)
        fleet.wait_ready(list(bridges.values()))
        default = bridges[QUEUE_BOUNDS[0]]
        urls = {"bridge": default.url + PATH, "bjoern": bjoern.url + PATH}

        # 1. warm up, capacity (closed loop), unloaded latency (interleaved, medians of 3)
        for url in [*urls.values(), *(b.url + PATH for b in bridges.values())]:
            run_wrk(url, 64, 2.0, bodies)
        capacity = {name: median(run_wrk(url, 256, 5.0, bodies)["rps"] for _ in range(2))
                    for name, url in urls.items()}
        unloaded_runs: dict[str, list[dict]] = {name: [] for name in urls}
        for _ in range(3):
            for name, url in urls.items():
                unloaded_runs[name].append(constant_rate(url, UNLOADED_RATE, 4, bodies))
        unloaded = {name: {"p50_ms": median(r["p50_ms"] for r in runs),
                           "p99_ms": median(r["p99_ms"] for r in runs)}
                    for name, runs in unloaded_runs.items()}
        out["capacity"] = capacity
        out["unloaded"] = unloaded

        # 2. the overload row: twice the bridge's capacity, for each queue bound (interleaved rounds)
        offered = 2 * capacity["bridge"]
        runs: dict[int, list[dict]] = {bound: [] for bound in bridges}
        for _ in range(OVERLOAD_ROUNDS):
            for bound, bridge in bridges.items():
                before = memory(server, bridge)
                run = constant_rate(bridge.url + PATH, offered, OVERLOAD_SECONDS, bodies, connections=1024)
                time.sleep(1.0)
                after = memory(server, bridge)
                runs[bound].append({**run, "memory_before_mib": before, "memory_after_mib": after})
        out["overload"] = {"offered_rps": offered, "runs": {str(k): v for k, v in runs.items()}}

        # 3. latency vs throughput at constant rates (bridge and bjoern interleaved)
        top = max(capacity.values())
        curve: dict[str, list[dict]] = {name: [] for name in urls}
        for fraction in CURVE_FRACTIONS:
            for name, url in urls.items():
                point = constant_rate(url, fraction * top, CURVE_SECONDS, bodies, connections=1024)
                curve[name].append(point)
        out["curve"] = curve

        # 4. one document while 100,000-document batches run (unloaded / loaded interleaved)
        out["big_batch"] = one_document_during_big_batches(server.url, urls["bridge"], texts, bodies)
    return out


def one_document_during_big_batches(endpoint: str, url: str, texts: list[str], bodies: Path,
                                    rounds: int = BIG_BATCH_ROUNDS) -> list[dict]:
    """Section 4: the one-document latency at ``url`` without, then with, big batches on ``endpoint``.

    Each round measures unloaded, then starts ``batch`` calls of 100,000 documents
    back to back on the same expert and measures again while they run.
    """
    out = []
    for _ in range(rounds):
        quiet = constant_rate(url, UNLOADED_RATE, BIG_BATCH_SECONDS, bodies)
        stop, log = threading.Event(), []
        worker = threading.Thread(target=big_batches, args=(endpoint, texts, stop, log), daemon=True)
        worker.start()
        time.sleep(1.0)  # the first batch is running
        busy = constant_rate(url, UNLOADED_RATE, BIG_BATCH_SECONDS, bodies)
        stop.set()
        worker.join(180)
        out.append({"unloaded": quiet, "during_batch": busy, "batches": log})
    return out


def one_document_only() -> None:
    """``--one-document``: only section 4 (one server, one bridge); print its table."""
    texts = load_texts()
    bodies = write_bodies(texts, TMP / "overload-bodies.jsonl", count=2000)
    with Fleet() as fleet:
        server = fleet.expertd("expertd", DEFAULT_CONFIG)
        fleet.wait_ready([server])
        with environment(LOG_LEVEL="warn"):
            bridge = fleet.bridge(server.url)
        fleet.wait_ready([bridge])
        run_wrk(bridge.url + PATH, 64, 2.0, bodies)  # warm up
        rounds = one_document_during_big_batches(server.url, bridge.url + PATH, texts, bodies)
    (TMP / "overload-one-document.json").write_text(json.dumps(rounds, indent=2))
    print("\n".join(big_batch_lines(rounds)))


def draw(curve: dict, capacity: dict, path: Path) -> None:
    """Latency (p50, p99 of 200s) against goodput for each server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"bridge": ("expertd via the Express bridge", "tab:blue"),
              "bjoern": ("Falcon + bjoern", "tab:orange")}
    for name, points in curve.items():
        label, colour = styles.get(name, (name, None))
        offered = [p["offered_rps"] for p in points]
        axes[0].plot(offered, [p["p99_ms"] for p in points], "o-", color=colour, label=f"{label}, p99")
        axes[0].plot(offered, [p["p50_ms"] for p in points], "s--", color=colour, alpha=0.6,
                     label=f"{label}, p50")
        axes[1].plot(offered, [p["goodput_rps"] for p in points], "o-", color=colour, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("offered load (requests/s, constant rate)")
    axes[0].set_ylabel("latency of 200 answers (ms, from when due)")
    axes[0].set_title("Latency vs offered load")
    axes[0].legend(fontsize=8)
    axes[0].grid(True, which="both", alpha=0.3)
    top = max(max(p["offered_rps"] for p in points) for points in curve.values())
    axes[1].plot([0, top], [0, top], ":", color="grey", label="offered")
    axes[1].set_xlabel("offered load (requests/s)")
    axes[1].set_ylabel("goodput (200s per second)")
    axes[1].set_title("Goodput vs offered load")
    axes[1].legend(fontsize=8)
    axes[1].grid(True, alpha=0.3)
    fig.suptitle(f"POST /experts/sentiment, {os.cpu_count()} cores shared by client and servers", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(value, digits: int = 1) -> str:
    """A number for the tables ("-" when missing)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def row(*cells) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def big_batch_lines(rounds: list[dict]) -> list[str]:
    """Section 4 of the report: one document while big batches run."""
    lines = ["", f"## One document while {BIG_BATCH:,}-document batches run", "",
             f"Goal: the one-document p99 during a big batch <= 3x the unloaded p99 ({UNLOADED_RATE} req/s "
             f"through the bridge for {BIG_BATCH_SECONDS} s; the batches go to the same expert over RPC, "
             "back to back, from 1 s before the loaded run to its end).", "",
             row("round", "unloaded p50 / p99 (ms)", "during batches p50 / p99 (ms)", "p99 ratio",
                 "batch calls (s each)"),
             row(*["---"] * 5)]
    ratios = []
    for i, r in enumerate(rounds, 1):
        q, b = r["unloaded"]["p99_ms"], r["during_batch"]["p99_ms"]
        ratio = b / q if q and b else None
        if ratio is not None:
            ratios.append(ratio)
        calls = ", ".join(f"{c['seconds']:.1f}" + (" (error)" if "error" in c else "") for c in r["batches"])
        lines.append(row(i, f"{fmt(r['unloaded']['p50_ms'], 2)} / {fmt(q, 2)}",
                         f"{fmt(r['during_batch']['p50_ms'], 2)} / {fmt(b, 2)}", f"{fmt(ratio, 1)}x", calls))
    if ratios:
        lines.append(f"\nMedian ratio: {median(ratios):.1f}x.")
    return lines


def report(data: dict) -> str:
    """RESULTS-overload.md from the raw numbers."""
    cap, unl = data["capacity"], data["unloaded"]
    m = data["machine"]
    lines = ["# Overload through the bridge (`python -m bench.overload`)", "",
             f"Machine: {m['cpus']} cores shared by the load generator, every server and, during this run, "
             f"other work (load average at the start: {m.get('load', '?')}); Python {m['python']}, "
             f"Node {m['node']}. Load: POST /experts/sentiment (Keras model) with real sentences; "
             "constant-rate load from bench/constant_rate.js (open loop; latency counted from when each "
             "request was due, so time spent waiting to be read counts).", "",
             "## Capacity and unloaded latency", "",
             row("server", "capacity (wrk -c256, req/s, median of 2)", "unloaded p50 (ms)",
                 f"unloaded p99 (ms, {UNLOADED_RATE} req/s, median of 3)"),
             row("---", "---", "---", "---")]
    for name in cap:
        lines.append(row(name, fmt(cap[name], 0), fmt(unl[name]["p50_ms"], 2), fmt(unl[name]["p99_ms"], 2)))
    o = data["overload"]
    lines += ["", f"## The overload row: {fmt(o['offered_rps'], 0)} req/s offered (2x the bridge's capacity) "
              f"for {OVERLOAD_SECONDS} s", "",
              "Goal: goodput >= 90% of capacity, answered p99 <= 3x unloaded p99. "
              f"Medians of {OVERLOAD_ROUNDS} interleaved rounds (memory: the last round).", "",
              row("COALESCE_MAX_QUEUE", "goodput (200s/s)", "share of capacity", "p99 of 200s (ms)",
                  "vs unloaded p99", "answered 503", "non-200 answers by name", "transport errors",
                  "server RSS (MiB)", "bridge RSS (MiB)"),
              row(*["---"] * 10)]
    for bound, runs in o["runs"].items():
        goodput = median(r["goodput_rps"] for r in runs)
        p99s = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
        p99 = median(p99s) if p99s else None
        shed = median(r["shed_503"] / max(1, r["requests"]) for r in runs)
        names: dict[str, int] = {}
        for r in runs:
            for k, v in r["error_names"].items():
                names[k] = names.get(k, 0) + v
        last = runs[-1]
        mb, ma = last["memory_before_mib"], last["memory_after_mib"]
        default = " (default)" if int(bound) == QUEUE_BOUNDS[0] else ""
        vs = p99 / unl["bridge"]["p99_ms"] if p99 else None
        lines.append(row(f"{bound}{default}", fmt(goodput, 0), f"{goodput / cap['bridge']:.0%}", fmt(p99),
                         f"{fmt(vs, 1)}x", f"{shed:.0%}",
                         ", ".join(f"{k}: {v}" for k, v in sorted(names.items())) or "-",
                         sum(r["errors"] for r in runs),
                         f"{fmt(mb['server'], 0)} -> {fmt(ma['server'], 0)}",
                         f"{fmt(mb['bridge'], 0)} -> {fmt(ma['bridge'], 0)}"))
    lines += ["", "## Latency vs throughput (constant rates)", "",
              f"![latency vs throughput]({PICTURE.name})", "",
              f"{CURVE_SECONDS} s per point, bridge and bjoern interleaved at each rate.", "",
              row("offered (req/s)", "bridge goodput", "bridge p50 / p99 (ms)", "bridge non-200",
                  "bjoern goodput", "bjoern p50 / p99 (ms)", "bjoern non-200"),
              row(*["---"] * 7)]
    for b, f in zip(data["curve"]["bridge"], data["curve"]["bjoern"]):
        lines.append(row(fmt(b["rate"], 0), fmt(b["goodput_rps"], 0),
                         f"{fmt(b['p50_ms'])} / {fmt(b['p99_ms'])}", b["requests"] - b["ok"],
                         fmt(f["goodput_rps"], 0),
                         f"{fmt(f['p50_ms'])} / {fmt(f['p99_ms'])}", f["requests"] - f["ok"]))
    lines += big_batch_lines(data["big_batch"])
    late = max(r["elapsed_s"] for runs in o["runs"].values() for r in runs)
    reading = (
        f"At twice its capacity the bridge is offered {fmt(o['offered_rps'], 0)} requests a second and "
        "must read, route and answer every one of them on its one Node thread, on the same 2 cores as "
        "the load generator (whose own cost grows with the offered rate) and the server. A 503 still "
        "costs the bridge the HTTP parsing, routing and body of the request (not measured apart here), "
        "so when the capacity is the bridge's own CPU, shedding cannot keep goodput near capacity: "
        f"requests wait to be read at all (the last answers of a {OVERLOAD_SECONDS} s run came after "
        f"{late:.0f} s), which no queue bound inside the bridge can see, and that wait is what the p99 "
        "of the 200s measures. The bridge's resident memory grows with the ~1,000 open connections "
        "(see the table); the server's does not.")
    lines += ["", "## Reading", "", reading, "",
              "Raw numbers: `bench/tmp/overload.json` (not committed).", ""]
    return "\n".join(lines)


def main() -> None:
    """Measure, draw, write the report (``--one-document``: only section 4, printed)."""
    if "--one-document" in sys.argv[1:]:
        one_document_only()
        return
    data = measure()
    (TMP / "overload.json").write_text(json.dumps(data, indent=2))
    draw(data["curve"], data["capacity"], PICTURE)
    RESULTS.write_text(report(data))
    print(f"wrote {RESULTS.relative_to(ROOT)} and {PICTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
