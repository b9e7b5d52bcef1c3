"""Overload through the HTTP bridge: ``python -m bench.overload [--only overload|curve]``.

Writes ``bench/RESULTS-overload.md`` and the picture ``bench/latency.png``.
Every server is started here (``bench.servers.Fleet``): one ``expertd serve``
with the default experts file, Express bridges in front of it (the default,
which sheds load before Express with an adaptive limit on requests in
flight; one with a fixed limit; one that does not shed at all), and Falcon +
bjoern (``bench/falcon_app.py``) with the same Keras model called inline.
Load is POST ``/experts/sentiment`` with real sentences. Constant-rate load
comes from ``bench/constant_rate.js``: open loop over a fixed pool of
keep-alive connections (wrk2's model); latency counted from when each request
was due, so waiting in the generator or in the server's socket counts.

1. **Capacity and unloaded latency**: 50 requests/s gives the unloaded
   p50/p99; closed-loop ``wrk -c256`` gives wrk's figure (reported, and the
   scale of the rates tried); the **capacity** is the bridge's throughput:
   the most 200s per second it gave in any run (wrk's closed loop or a point
   of the sweep). The highest rate of the sweep served within the latency
   objective (goodput >= 98% of offered, p99 of the 200s no worse than 3x
   the unloaded p99) is reported next to it.
2. **Latency vs throughput**: constant rates from a tenth of wrk's figure to
   twice it, bridge and bjoern interleaved at each rate; p50/p99 of answered
   requests and the goodput, drawn in ``bench/latency.png``.
3. **The overload row**: twice the capacity offered for 10 s to each bridge
   (interleaved rounds): goodput (200s per second, counted until the last
   answer) as a share of capacity, p99 of the 200s against the unloaded p99,
   the share answered 503, and the resident memory of server and bridge.
4. **One document during a big batch**: the one-document p99 through the
   bridge at a light constant rate while 100,000-document ``batch`` calls run
   back to back on the same expert, next to the unloaded p99 (interleaved).

``--only overload`` runs sections 1 (the bridge's sweep only) and 3;
``--only curve`` runs sections 1 and 2; ``--only one-document`` runs section
4 alone (one server, one bridge); each keeps the other sections of the last
full run (``bench/tmp/overload.json``) in the report.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from bench.common import BENCH, DEFAULT_CONFIG, ROOT, TMP, load_texts, median, tree_cpu_seconds, tree_kib
from bench.servers import Fleet
from bench.web import run_wrk, write_bodies

RESULTS = BENCH / "RESULTS-overload.md"
PICTURE = BENCH / "latency.png"
GENERATOR = BENCH / "constant_rate.js"
RAW = TMP / "overload.json"
PATH = "/experts/sentiment"
#: The bridges of the overload row: label -> environment (the first is the default).
BRIDGES = {
    "adaptive limit (default)": {},
    "fixed limit 256": {"ADMIT_ADAPTIVE": "false", "ADMIT_MAX_IN_FLIGHT": "256"},
    "no shedding": {"ADMIT_MAX_IN_FLIGHT": "0", "ADMIT_MAX_LAG_MS": "0"},
}
DEFAULT_BRIDGE = next(iter(BRIDGES))
#: A bridge that sheds nearly everything (one request in flight, no lag check): what a 503 costs.
SHEDDER = {"ADMIT_ADAPTIVE": "false", "ADMIT_MAX_IN_FLIGHT": "1", "ADMIT_MAX_LAG_MS": "0"}
SHED_COST_SECONDS = 4
#: Connections of the constant-rate generator (a fixed pool, like wrk2's -c; the same as wrk's -c).
CONNECTIONS = 256
UNLOADED_RATE = 50
OVERLOAD_SECONDS = 10
OVERLOAD_ROUNDS = 2
CURVE_SECONDS = 4
#: Rates of the sweep, as fractions of wrk's closed-loop figure for the bridge.
CURVE_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0)
#: Within the latency objective: p99 <= this x the unloaded p99 (the overload goal's bound).
P99_OBJECTIVE = 3.0
BIG_BATCH = 100_000
BIG_BATCH_ROUNDS = 3
BIG_BATCH_SECONDS = 8


class LoadError(RuntimeError):
    """The constant-rate generator failed or printed no result."""


def constant_rate(url: str, rate: float, seconds: float, bodies: Path,
                  connections: int = CONNECTIONS) -> dict:
    """Offer ``rate`` requests/s to ``url`` for ``seconds``; the generator's summary.

    ``goodput_rps`` is the 200s per second counted until the last answer came
    (a backlog answered after the offered window does not count as throughput).
    """
    command = ["node", str(GENERATOR), url, f"{rate:.1f}", str(seconds), str(bodies), str(connections)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    raw = json.loads(line[len("BENCH_JSON "):])
    ok = raw["statuses"].get("200", {"count": 0, "p50_ms": None, "p99_ms": None})
    shed = raw["statuses"].get("503", {"count": 0, "p99_ms": None})
    elapsed = max(seconds, raw["elapsed_s"])
    return {
        "rate": rate,
        "offered_rps": raw["offered_rps"],
        "requests": raw["requests"],
        "ok": ok["count"],
        "goodput_rps": ok["count"] / elapsed,
        "p50_ms": ok["p50_ms"],
        "p99_ms": ok["p99_ms"],
        "shed_503": shed["count"],
        "p99_503_ms": shed["p99_ms"],
        "other": raw["requests"] - ok["count"] - shed["count"],
        "errors": raw["errors"] + raw["unanswered"],
        "reconnects": raw.get("reconnects", 0),
        "peak_waiting": raw.get("peak_waiting", 0),
        "elapsed_s": raw["elapsed_s"],
        "statuses": {k: v["count"] for k, v in raw["statuses"].items()},
        "error_names": raw.get("error_names", {}),
        "p99_all_ms": raw["all"]["p99_ms"],
    }


def wrk_goodput(run: dict) -> float:
    """200 answers per second of a wrk run (a shed 503 is no throughput)."""
    return (run["requests"] - run["status_errors"]) / run["seconds"] if run["seconds"] else float("nan")


def sustained(point: dict, unloaded_p99_ms: float) -> bool:
    """True when a constant-rate point is within the latency objective (see the module docstring)."""
    return (point["goodput_rps"] >= 0.98 * point["rate"]
            and point["p99_ms"] is not None and point["p99_ms"] <= P99_OBJECTIVE * unloaded_p99_ms)


def capacity_of(points: list[dict], unloaded_p99_ms: float) -> float | None:
    """The highest rate of the sweep within the latency objective (None: not even the lowest)."""
    rates = [p["rate"] for p in points if sustained(p, unloaded_p99_ms)]
    return max(rates) if rates else None


def throughput(data: dict, name: str) -> float:
    """The capacity: the most 200s per second ``name`` gave, closed loop (wrk) or at a constant rate."""
    return max([data["wrk"][name], *(p["goodput_rps"] for p in data.get("curve", {}).get(name, []))])


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
    from expertd.clients.wire import connect

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


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(CPUs for the servers, CPUs for the load), or None where there are not two to split.

    The load generator runs on a CPU of its own, as it would on another machine:
    sharing the servers' cores, it took a growing share of them as the offered rate
    grew, so "twice the capacity" measured the generator's appetite as much as
    the bridge's shedding. ``BENCH_PIN=0`` keeps everything on every CPU.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or os.environ.get("BENCH_PIN", "1") == "0":
        return None
    return set(cpus[:-1]), {cpus[-1]}


def measure(only: str | None = None) -> dict:
    """Run the sections (all, or ``only`` "overload" / "curve"); the raw numbers."""
    texts = load_texts()
    split = split_cpus()
    if split is not None:
        os.sched_setaffinity(0, split[1])  # this process and the generators it starts
    bodies = write_bodies(texts, TMP / "overload-bodies.jsonl", count=2000)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                             "node": subprocess.run(["node", "--version"], capture_output=True,
                                                    text=True).stdout.strip()},
                 "only": only,
                 "pinned": None if split is None else {"servers": sorted(split[0]),
                                                       "load": sorted(split[1])}}
    with Fleet(cpus=None if split is None else split[0]) as fleet:
        server = fleet.expertd("expertd", DEFAULT_CONFIG)
        bjoern = fleet.bjoern()
        fleet.wait_ready([server, bjoern])
        bridges = {}
        for label, env in BRIDGES.items():
            if only == "curve" and label != DEFAULT_BRIDGE:
                continue
            with environment(LOG_LEVEL="warn", **env):
                bridges[label] = fleet.bridge(server.url)
        fleet.wait_ready(list(bridges.values()))
        default = bridges[DEFAULT_BRIDGE]
        urls = {"bridge": default.url + PATH, "bjoern": bjoern.url + PATH}
        if only == "overload":
            urls = {"bridge": urls["bridge"]}

        # 1. warm up, wrk's closed-loop figure, unloaded latency (interleaved, medians of 3)
        for url in [*urls.values(), *(b.url + PATH for b in bridges.values())]:
            run_wrk(url, 64, 2.0, bodies)
        out["wrk"] = {name: median(wrk_goodput(run_wrk(url, CONNECTIONS, 5.0, bodies)) for _ in range(2))
                      for name, url in urls.items()}
        unloaded_runs: dict[str, list[dict]] = {name: [] for name in urls}
        for _ in range(3):
            for name, url in urls.items():
                unloaded_runs[name].append(constant_rate(url, UNLOADED_RATE, 4, bodies))
        unloaded = {name: {"p50_ms": median(r["p50_ms"] for r in runs),
                           "p99_ms": median(r["p99_ms"] for r in runs)}
                    for name, runs in unloaded_runs.items()}
        out["unloaded"] = unloaded

        # 2. latency vs throughput at constant rates (bridge and bjoern interleaved); the capacity
        top = out["wrk"]["bridge"]
        curve: dict[str, list[dict]] = {name: [] for name in urls}
        for fraction in CURVE_FRACTIONS:
            for name, url in urls.items():
                curve[name].append(constant_rate(url, fraction * top, CURVE_SECONDS, bodies))
        out["curve"] = curve
        out["capacity"] = {name: capacity_of(points, unloaded[name]["p99_ms"])
                           for name, points in curve.items()}
        if only == "curve":
            return out

        # 3. the overload row: twice the bridge's throughput, for each bridge (interleaved rounds)
        capacity = throughput(out, "bridge")
        offered = 2 * capacity
        runs: dict[str, list[dict]] = {label: [] for label in bridges}
        for _ in range(OVERLOAD_ROUNDS):
            for label, bridge in bridges.items():
                before, cpu_before, started = memory(server, bridge), cpu(server, bridge), time.monotonic()
                run = constant_rate(bridge.url + PATH, offered, OVERLOAD_SECONDS, bodies)
                cpu_after, seconds = cpu(server, bridge), time.monotonic() - started
                time.sleep(1.0)
                after = memory(server, bridge)
                runs[label].append({**run, "memory_before_mib": before, "memory_after_mib": after,
                                    "cpu_share": {k: (cpu_after[k] - cpu_before[k]) / seconds
                                                  for k in cpu_after}})
        out["overload"] = {"capacity_rps": capacity, "offered_rps": offered, "runs": runs,
                           "within_objective_rps": out["capacity"]["bridge"]}
        out["shed_cost"] = shed_cost(fleet, server, capacity, bodies)
        if only == "overload":
            return out

        # 4. one document while 100,000-document batches run (unloaded / loaded interleaved)
        out["big_batch"] = one_document_during_big_batches(server.url, urls["bridge"], texts, bodies)
    return out


def cpu(server, bridge) -> dict:
    """CPU seconds used so far by the server's and the bridge's process trees."""
    return {"server": tree_cpu_seconds(server.pid), "bridge": tree_cpu_seconds(bridge.pid)}


def shed_cost(fleet: Fleet, server, capacity: float, bodies: Path) -> dict:
    """What one 503 costs the bridge: CPU per shed request, from a bridge that sheds nearly all.

    The bridge (``SHEDDER``: one request in flight) is offered the capacity, then twice
    it, for ``SHED_COST_SECONDS`` each; the cost is the slope: the extra CPU over the
    extra 503s (so the few requests it serves, and its idle timers, cancel out).
    """
    with environment(LOG_LEVEL="warn", **SHEDDER):
        shedder = fleet.bridge(server.url)
    try:
        fleet.wait_ready([shedder])
        url = shedder.url + PATH
        constant_rate(url, capacity, 2, bodies)  # warm up
        points = []
        for rate in (capacity, 2 * capacity):
            before = tree_cpu_seconds(shedder.pid)
            run = constant_rate(url, rate, SHED_COST_SECONDS, bodies)
            points.append({"rate": rate, "shed": run["shed_503"], "ok": run["ok"],
                           "cpu_s": tree_cpu_seconds(shedder.pid) - before})
    finally:
        fleet.stop(shedder)
    (a, b) = points
    per_shed = 1e6 * (b["cpu_s"] - a["cpu_s"]) / max(1, b["shed"] - a["shed"])
    return {"points": points, "per_shed_us": per_shed}


def ceiling(capacity: float, shed_us: float) -> float:
    """The most 200s/s (a share of ``capacity``) one core can give at twice the capacity.

    At capacity C the core gives each request served 1/C of a second. At 2C,
    serving G and shedding the other 2C - G at ``shed_us`` (c) each fits in the
    second only if G/C + (2C - G) c <= 1: G/C <= (1 - 2Cc) / (1 - Cc). It assumes
    the requests served cost what they cost at capacity and no time is lost to
    waiting; a real run is below it.
    """
    cc = capacity * shed_us / 1e6
    return (1 - 2 * cc) / (1 - cc)


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


def one_document_only() -> list[dict]:
    """``--only one-document``: section 4 alone (one server, one bridge); its rounds."""
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
    return rounds


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
    if capacity.get("bridge"):
        for ax in axes:
            ax.axvline(capacity["bridge"], color="tab:blue", alpha=0.3, linestyle="-.",
                       label="bridge capacity (within the p99 objective)" if ax is axes[1] else None)
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


def overload_summary(data: dict) -> dict:
    """Medians over the overload rounds of each bridge, and whether the goal is met."""
    o, unl = data["overload"], data["unloaded"]["bridge"]["p99_ms"]
    out = {}
    for label, runs in o["runs"].items():
        goodput = median(r["goodput_rps"] for r in runs)
        p99s = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
        p99 = median(p99s) if p99s else None
        share = goodput / o["capacity_rps"]
        vs = p99 / unl if p99 else None
        out[label] = {"goodput": goodput, "share": share, "p99": p99, "vs": vs,
                      "met": share >= 0.9 and vs is not None and vs <= 3.0}
    return out


def headline(data: dict) -> str:
    """One line for bench/RESULTS.md (``report.other_reports`` copies lines that start with "Headline:")."""
    if "overload" not in data:
        return ""
    o = data["overload"]
    d = overload_summary(data)[DEFAULT_BRIDGE]
    off = overload_summary(data).get("no shedding")
    tail = (f"; without shedding {off['share']:.0%} and {fmt(off['vs'])}x" if off else "")
    return (f"Headline: **Overload row** (bridge, {fmt(o['offered_rps'], 0)} req/s offered = 2x its "
            f"capacity of {fmt(o['capacity_rps'], 0)} req/s for {OVERLOAD_SECONDS} s): goodput "
            f"**{d['share']:.0%}** of "
            f"capacity, p99 of the 200s **{fmt(d['vs'])}x** the unloaded p99 (goal >= 90% and <= 3x: "
            f"{'met' if d['met'] else '**missed**'}){tail}.")


def cpu_cell(runs: list[dict]) -> str:
    """The median CPU share of server and bridge over overload runs ("-" before it was measured)."""
    shares = [r["cpu_share"] for r in runs if "cpu_share" in r]
    if not shares:
        return "-"
    server = median(x["server"] for x in shares)
    bridge = median(x["bridge"] for x in shares)
    return f"{server:.0%} + {bridge:.0%} = {server + bridge:.0%}"


def budget_lines(data: dict) -> list[str]:
    """The section on what one core can give at twice the capacity (``ceiling``), and why the goal misses."""
    o, cost, unl = data["overload"], data["shed_cost"], data["unloaded"]["bridge"]["p99_ms"]
    capacity, c = o["capacity_rps"], cost["per_shed_us"]
    top = ceiling(capacity, c)
    a, b = cost["points"]
    lines = ["", "## What one core can give at twice the capacity", "",
             "The bridge and the server share one core, so every 503 is paid for with serving time. "
             f"At the capacity of {fmt(capacity, 0)} req/s a request served takes {1e6 / capacity:,.0f} us "
             f"of the core; a request shed costs the bridge **{c:,.0f} us** (measured: a bridge that "
             f"admits one request at a time, offered {fmt(a['rate'], 0)} then {fmt(b['rate'], 0)} req/s "
             f"for {SHED_COST_SECONDS} s each, used {fmt(b['cpu_s'] - a['cpu_s'], 2)} more CPU seconds "
             f"for {b['shed'] - a['shed']:,} more 503s; most of it is the kernel's: a read, a write and "
             "the loopback TCP of each request).", "",
             f"At {fmt(o['offered_rps'], 0)} req/s, serving G requests per second and shedding the rest "
             "fits in the core's second only if G/C + (2C - G) c <= 1: G <= (1 - 2Cc) / (1 - Cc) C = "
             f"**{top:.0%} of capacity** ({fmt(top * capacity, 0)} req/s), with the core 100% busy and "
             f"no time lost to waiting. At the goal's 90% the core is "
             f"{0.9 + (2 - 0.9) * capacity * c / 1e6:.0%} busy with the bridge and the server alone."]
    calm = [p for p in data.get("curve", {}).get("bridge", []) if p["shed_503"] == 0 and p["p99_ms"]]
    worst = max(calm, key=lambda p: p["rate"]) if calm and unl else None
    if worst and worst["p99_ms"] > P99_OBJECTIVE * unl:
        lines += ["", "The p99 goal fails before there is any overload: in the sweep of this run, at "
                  f"{fmt(worst['rate'], 0)} req/s ({worst['rate'] / capacity:.0%} of capacity, nothing "
                  f"shed) the p99 of the 200s was {fmt(worst['p99_ms'])} ms, "
                  f"{worst['p99_ms'] / unl:.1f}x the unloaded {fmt(unl)} ms. Admission control only "
                  "chooses which requests are served; it cannot serve them faster than a bridge that is "
                  "not overloaded serves the same rate. What makes that latency, measured on this "
                  "machine with ad-hoc probes (/proc schedstat, node --trace-gc; not part of this run): "
                  "the bridge waits for the CPU about as long as it runs "
                  "(its main thread's run-queue wait was 42% of the time at 1,000 req/s, against 46% "
                  "running); V8's young-generation collections took 9-15 ms each, a pause every "
                  "request in the bridge waits out; and from about 1,000 req/s the core is ~95% busy "
                  "(the process trees' CPU), because batches are small there and the server pays its "
                  "cost per call often."]
    elif worst:
        lines += ["", f"In the sweep of this run the p99 held within {P99_OBJECTIVE:g}x up to "
                  f"{fmt(worst['rate'], 0)} req/s, the highest rate at which nothing was shed."]
    free = overload_summary(data).get("no shedding")
    if free and free["share"] > 1:
        lines += ["", f"The bridge that sheds nothing served {fmt(free['goodput'], 0)} 200s/s at twice the "
                  f"capacity ({free['share']:.0%} of it, at {fmt(free['vs'])}x the unloaded p99): with "
                  f"all {CONNECTIONS} connections waiting, its batches are as big as they get. So the "
                  "capacity figure (the closed loop's) is below what a saturated bridge serves: against "
                  f"that bridge's figure the default's share is "
                  f"{overload_summary(data)[DEFAULT_BRIDGE]['goodput'] / free['goodput']:.0%}, not "
                  f"{overload_summary(data)[DEFAULT_BRIDGE]['share']:.0%}."]
    return lines


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
    unl = data["unloaded"]
    m = data["machine"]
    pinned = data.get("pinned")
    where = (f"{m['cpus']} cores shared by the load generator, every server and, during this run, "
             "other work" if not pinned else
             f"{m['cpus']} cores: every server on CPU {', '.join(map(str, pinned['servers']))}, the load "
             f"generators on CPU {', '.join(map(str, pinned['load']))} (as on a machine of their own; "
             "`BENCH_PIN=0` shares them); other work may run on both")
    lines = ["# Overload through the bridge (`python -m bench.overload`)", "",
             f"Machine: {where} (load average at the start: {m.get('load', '?')}); Python {m['python']}, "
             f"Node {m['node']}. Load: POST /experts/sentiment (Keras model) with real sentences; "
             f"constant-rate load from bench/constant_rate.js: open loop over a fixed pool of {CONNECTIONS} "
             "keep-alive connections opened before the clock starts (wrk2's model), latency counted from "
             "when each request was due, so waiting in the generator or in the server's socket counts. "
             "Goodput: 200 answers per second, counted until the last answer came.", ""]
    line = headline(data)
    if line:
        lines += [line, ""]
    lines += ["## Capacity and unloaded latency", "",
              "**Capacity** is the server's throughput: the most 200s per second it gave in any run, "
              f"wrk's closed loop (`wrk -c{CONNECTIONS}`, which waits for each answer before the next "
              "request, so it never offers more than the server takes) or a point of the constant-rate "
              f"sweep below (same generator, same {CONNECTIONS} connections as the overload row). Next to "
              "it, the highest rate of the sweep served within the latency objective: goodput "
              f"(200s) >= 98% of offered, p99 <= {P99_OBJECTIVE:g}x the unloaded p99.", "",
              row("server", "capacity (200s/s)", f"wrk -c{CONNECTIONS} (200s/s, median of 2)",
                  "highest rate within the objective (req/s)",
                  "unloaded p50 (ms)", f"unloaded p99 (ms, {UNLOADED_RATE} req/s, median of 3)"),
              row("---", "---", "---", "---", "---", "---")]
    for name in unl:
        cap = data.get("capacity", {}).get(name)
        best = max((p["goodput_rps"] for p in data.get("curve", {}).get(name, [])), default=None)
        shown = fmt(cap, 0) if cap else f"none (highest goodput {fmt(best, 0)})"
        lines.append(row(name, fmt(throughput(data, name), 0), fmt(data["wrk"][name], 0), shown,
                         fmt(unl[name]["p50_ms"], 2), fmt(unl[name]["p99_ms"], 2)))
    if "overload" in data:
        o = data["overload"]
        summary = overload_summary(data)
        lines += ["", f"## The overload row: {fmt(o['offered_rps'], 0)} req/s offered (2x the bridge's "
                  f"capacity of {fmt(o['capacity_rps'], 0)}) for {OVERLOAD_SECONDS} s", "",
                  "Goal: goodput >= 90% of capacity, p99 of the 200s <= 3x the unloaded p99. "
                  f"Medians of {OVERLOAD_ROUNDS} interleaved rounds (memory: the last round). The bridges "
                  "differ only in their admission settings (express_bridge/src/admission.js): the default "
                  "sheds with an adaptive limit on requests in flight and on event-loop lag; "
                  "`ADMIT_ADAPTIVE=false` keeps the limit fixed at ADMIT_MAX_IN_FLIGHT; "
                  "`ADMIT_MAX_IN_FLIGHT=0 ADMIT_MAX_LAG_MS=0` sheds "
                  "nothing before Express (only the coalescer's bounded queue answers 503).", "",
                  row("bridge", "goodput (200s/s)", "share of capacity", "p99 of 200s (ms)",
                      "vs unloaded p99", "goal", "answered 503", "p99 of 503s (ms)",
                      "non-200 answers by name",
                      "transport errors / reconnects", "CPU: server + bridge (% of a core)",
                      "server RSS (MiB)", "bridge RSS (MiB)"),
                  row(*["---"] * 13)]
        for label, runs in o["runs"].items():
            sm = summary[label]
            shed = median(r["shed_503"] / max(1, r["requests"]) for r in runs)
            p503 = [r["p99_503_ms"] for r in runs if r.get("p99_503_ms") is not None]
            names: dict[str, int] = {}
            for r in runs:
                for k, v in r["error_names"].items():
                    names[k] = names.get(k, 0) + v
            last = runs[-1]
            mb, ma = last["memory_before_mib"], last["memory_after_mib"]
            lines.append(row(label, fmt(sm["goodput"], 0), f"{sm['share']:.0%}", fmt(sm["p99"]),
                             f"{fmt(sm['vs'], 1)}x", "met" if sm["met"] else "missed", f"{shed:.0%}",
                             fmt(median(p503)) if p503 else "-",
                             ", ".join(f"{k}: {v}" for k, v in sorted(names.items())) or "-",
                             f"{sum(r['errors'] for r in runs)} / "
                             f"{sum(r.get('reconnects', 0) for r in runs)}",
                             cpu_cell(runs),
                             f"{fmt(mb['server'], 0)} -> {fmt(ma['server'], 0)}",
                             f"{fmt(mb['bridge'], 0)} -> {fmt(ma['bridge'], 0)}"))
    if "shed_cost" in data and "overload" in data:
        lines += budget_lines(data)
    if "curve" in data and "bjoern" in data["curve"]:
        lines += ["", "## Latency vs throughput (constant rates)", "",
                  f"![latency vs throughput]({PICTURE.name})", "",
                  f"{CURVE_SECONDS} s per point, bridge (default settings) and bjoern interleaved at each "
                  "rate; rates are fractions of wrk's figure for the bridge. \\* within the latency "
                  "objective.", "",
                  row("offered (req/s)", "bridge goodput", "bridge p50 / p99 (ms)", "bridge non-200",
                      "bjoern goodput", "bjoern p50 / p99 (ms)", "bjoern non-200"),
                  row(*["---"] * 7)]
        for b, f in zip(data["curve"]["bridge"], data["curve"]["bjoern"]):
            star_b = "\\*" if sustained(b, unl["bridge"]["p99_ms"]) else ""
            star_f = "\\*" if sustained(f, unl["bjoern"]["p99_ms"]) else ""
            lines.append(row(fmt(b["rate"], 0), fmt(b["goodput_rps"], 0) + star_b,
                             f"{fmt(b['p50_ms'])} / {fmt(b['p99_ms'])}", b["requests"] - b["ok"],
                             fmt(f["goodput_rps"], 0) + star_f,
                             f"{fmt(f['p50_ms'])} / {fmt(f['p99_ms'])}", f["requests"] - f["ok"]))
    if "big_batch" in data:
        lines += big_batch_lines(data["big_batch"])
    lines += ["", "## Reading", "", reading(data), "",
              f"Raw numbers: `{RAW.relative_to(ROOT)}` (not committed).", ""]
    return "\n".join(lines)


def reading(data: dict) -> str:
    """What the numbers say (the parts that depend on the run are read from it)."""
    text = (
        "Congestion collapse is work done for requests that then fail: a bridge that reads, parses and "
        "routes every request it is offered and only then finds its queue full spends its one thread on "
        "answers nobody gets in time, and its queues (the coalescer's, the generator's, the sockets') make "
        "every answer late. The default bridge decides in the http.Server's own request handler, before "
        "Express: a shed request costs Node's HTTP parsing and one write of a prebuilt 503 (see above for "
        "what that costs against a request served), and its limit on requests in flight keeps the admitted "
        "ones from queueing.")
    if "overload" in data:
        sm = overload_summary(data)
        d, off = sm.get(DEFAULT_BRIDGE), sm.get("no shedding")
        if d and off and d["p99"] and off["p99"]:
            text += (f" In this run the p99 of the 200s at twice the capacity was {fmt(d['p99'])} ms with "
                     f"shedding and {fmt(off['p99'])} ms without ({off['p99'] / d['p99']:.1f}x lower), at "
                     f"{d['share']:.0%} and {off['share']:.0%} of capacity. ")
        text += ("The capacity is the bridge's throughput, so twice it is twice what the bridge can "
                 "compute. What the limit cannot hide: every 503 still costs the bridge its parsing; "
                 "the bridge and the server share their core(s), so at full load each waits for the "
                 "other's time slices, and the 503s wait as long as the 200s (their p99 is close) "
                 "before the bridge reads them; and the adaptive limit tolerates the latency that "
                 "growing batches add (4x its floor + 10 ms on the median). Lower fixed limits "
                 "(32, 48 in flight) measured worse on both counts (45-50% of capacity, 9x-17x). "
                 "Without pinning, the generator's own cost grows with the offered rate and takes "
                 "the servers' cores: on an idle machine that gave 58% and 17x.")
    return text


def main(argv: list[str] | None = None) -> None:
    """Measure, draw, write the report."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["overload", "curve", "one-document"],
                        help="run only the overload row, the curve (each with the capacity it needs) or the "
                             "one document during big batches; the other sections of the last run stay in "
                             "the report")
    parser.add_argument("--render", action="store_true",
                        help=f"measure nothing: write the report again from {RAW.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.render:
        RESULTS.write_text(report(json.loads(RAW.read_text())))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
        return
    if args.only == "one-document":
        rounds = one_document_only()
        if not RAW.exists():
            print("\n".join(big_batch_lines(rounds)))
            return
        data = {**json.loads(RAW.read_text()), "big_batch": rounds}
        RAW.write_text(json.dumps(data, indent=2))
        RESULTS.write_text(report(data))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
        return
    data = measure(args.only)
    if args.only and RAW.exists():
        previous = json.loads(RAW.read_text())
        keep = {"overload": ("curve", "big_batch"),
                "curve": ("overload", "shed_cost", "big_batch")}[args.only]
        for key in keep:
            if key in previous and key not in data:
                data[key] = previous[key]
        if args.only == "overload" and "bjoern" in previous.get("wrk", {}):
            for key in ("wrk", "unloaded", "capacity"):
                data[key] = {**previous[key], **{k: v for k, v in data[key].items() if k == "bridge"}}
            data["curve"] = {**previous.get("curve", {}), "bridge": data["curve"]["bridge"]}
    TMP.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps(data, indent=2))
    if "bjoern" in data.get("curve", {}):
        draw(data["curve"], data["capacity"], PICTURE)
    RESULTS.write_text(report(data))
    drawn = f" and {PICTURE.relative_to(ROOT)}" if "bjoern" in data.get("curve", {}) else ""
    print(f"wrote {RESULTS.relative_to(ROOT)}{drawn}")


if __name__ == "__main__":
    main()
