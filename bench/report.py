"""The Markdown report (bench/RESULTS.md): headline, method, one table per section."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path


# -- formatting ----------------------------------------------------------------------

def fmt(value, digits: int = 1) -> str:
    """A number with thousands separators; ``n/a`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def times(value, digits: int = 1) -> str:
    """``12.3x`` (a ratio)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}x"


def pct(value) -> str:
    """``56%`` (a fraction)."""
    return "n/a" if value is None or math.isnan(value) else f"{value * 100:.0f}%"


def plural(n: int, word: str) -> str:
    """``1 round``, ``3 rounds``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def spread(values: list[float]) -> str:
    """``min-max`` of a run's values."""
    if not values:
        return "n/a"
    return f"{min(values):,.0f}-{max(values):,.0f}"


def run_line(command: str, elapsed: float, after: tuple, before: tuple | None = None) -> str:
    """How a report's run was made: the command, the machine, when, how long, and its load
    average (at the end, or before and after)."""
    def load(values: tuple) -> str:
        return ", ".join(f"{value:.2f}" for value in values)

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = (f"{load(before)} before, {load(after)} after" if before is not None
             else f"when it ended {load(after)}")
    return (f"`{command}` on {os.uname().nodename} ({os.cpu_count()} cores), {when}, "
            f"{elapsed:.0f} s; load average {loads} (a shared machine: compare only the rows "
            "of one run). ")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def goal(ok: bool | None) -> str:
    """A goal's verdict."""
    return "n/a" if ok is None else ("met" if ok else "**missed**")


# -- the report ----------------------------------------------------------------------

def _err(section: dict | None) -> str | None:
    if section is None:
        return "not run"
    return section.get("error")


def headline(r: dict) -> list[str]:
    """The summary: each goal with its measured value and verdict."""
    lines = ["## Headline", ""]
    s1, s2, s3, s4, s5, s6 = (r.get(f"s{i}") for i in range(1, 7))
    if not _err(s1):
        warm, cold = s1["warm"]["median_ms"], s1["cold"]["median_ms"]
        lines.append(f"- **Pipe stage, cold vs warm:** `expertd pipe sentiment` takes "
                     f"{fmt(warm)} ms per document against {fmt(cold / 1000, 2)} s for a stage "
                     f"that loads TensorFlow itself: **{times(s1['speedup'])}** faster "
                     f"(goal >= 70x: {goal(s1['speedup'] >= 70)}; stage <= 50 ms: "
                     f"{goal(warm <= 50)}); peak memory {fmt(s1['warm']['peak_rss_mib'])} MiB "
                     f"vs {fmt(s1['cold']['peak_rss_mib'])} MiB.")
    if not _err(s2):
        lines.append(f"- **Stream:** one `expertd pipe sentiment --lines` moves "
                     f"**{fmt(s2['docs_per_s'], 0)} documents/s** "
                     f"({fmt(s2['documents'])} documents, start-up included).")
    if not _err(s3):
        cs = sorted({row["concurrency"] for row in s3.values()})
        parts = []
        for c in cs:
            on, off = s3.get(f"on@{c}"), s3.get(f"off@{c}")
            if on and off:
                parts.append(f"c={c}: {fmt(on['calls_per_s'], 0)} vs {fmt(off['calls_per_s'], 0)} "
                             f"calls/s ({times(on.get('throughput_vs_off'), 2)}), p99 "
                             f"{fmt(on['p99_ms'])} vs {fmt(off['p99_ms'])} ms")
        lines.append("- **RPC, micro-batching on vs off** (stock Python zerorpc client): "
                     + "; ".join(parts) + ".")
    if not _err(s4):
        from bench.web import versus

        top = max(row["concurrency"] for row in s4.values())
        bridge, bjoern = s4.get(f"bridge@{top}"), s4.get(f"bjoern@{top}")
        if bridge and bjoern:
            vs = versus(s4, "bridge", "bjoern", top)
            ok = vs["rps"] >= 1.0 and vs["p99"] <= 1.0
            lines.append(
                f"- **HTTP at concurrency {top}:** Express bridge {fmt(bridge['rps'], 0)} req/s, "
                f"p99 {fmt(bridge['p99_ms'])} ms vs Falcon + bjoern {fmt(bjoern['rps'], 0)} "
                f"req/s, p99 {fmt(bjoern['p99_ms'])} ms: the bridge has "
                f"**{pct(vs['rps'])}** of bjoern's throughput (paired per round: "
                f"{pct(vs['rps_paired'])}) and {times(vs['p99'], 2)} its p99 "
                f"(goal: at least bjoern's throughput with no worse p99: {goal(ok)}).")
        elif bjoern:
            lines.append(f"- **HTTP:** the Express bridge was not measured "
                         f"({r.get('bridge_error', 'not started')}).")
    if not _err(s5):
        lines.append(f"- **Batch:** `batch(\"sentiment\", {s5['documents']:,} docs)` runs at "
                     f"{fmt(s5['server_docs_per_s'], 0)} documents/s, "
                     f"**{pct(s5['vs_graph'])}** of the model's own in-process throughput "
                     f"through `tf.function` ({fmt(s5['graph_docs_per_s'], 0)}/s) "
                     f"(goal >= 50%: {goal(s5['vs_graph'] >= 0.5)}).")
    if not _err(s6):
        server = s6["servers"].get("expertd") or {}
        lines.append(f"- **Memory:** the server with all default experts "
                     f"{fmt(server.get('ready_rss_mib'), 0)} MiB resident when ready, "
                     f"{fmt(server.get('hwm_mib'), 0)} MiB peak; one pipe stage "
                     f"{fmt(s6['stage_single_peak_mib'])} MiB peak "
                     f"({fmt(s6['stage_stream_peak_mib'])} MiB streaming).")
    for i in range(1, 7):
        e = _err(r.get(f"s{i}"))
        if e and e != "not run":
            lines.append(f"- Section {i} failed: `{e}`")
    return lines + [""]


def method(r: dict) -> list[str]:
    """How the numbers were taken."""
    s = r["settings"]
    rpc_cs = ", ".join(map(str, s["rpc_concurrency"]))
    http_cs = ", ".join(map(str, s["http_concurrency"]))
    return ["## Method", "",
            "Every number is a median over repeated runs; p50/p99 come from the full list "
            "of latencies of a run (wrk: its histogram of every response), and the table "
            "shows the median over runs of each run's p50/p99. Things compared with each "
            "other are measured in the same run, interleaved in rounds (A, B, A, B, ...), "
            "so a ratio holds even when the shared machine's speed drifts. Every server "
            "listens on 127.0.0.1 and logs as it does by default (to a file); the runner "
            "starts them all, waits for them to answer, and stops them at the end.",
            "",
            f"1. Cold vs warm: {plural(s['cold_rounds'], 'round')} of one cold stage "
            f"(`bench/cold_stage.py`: import TensorFlow, load the model, one eager call), "
            f"{s['warm_per_round']} `expertd pipe sentiment` stages and as many "
            "`python -c pass`; one JSON document each, wall time from spawn to exit "
            "(including about 0.5 ms of GNU `time`, through which every stage runs), peak "
            "RSS as `/usr/bin/time -f %M` reports it for that stage. Python's bytecode "
            "cache is on, as in a normal installation (the runner unsets "
            "`PYTHONDONTWRITEBYTECODE` for its children), and one untimed stage of each "
            "kind runs first.",
            f"2. Stream: {s['stream_docs']:,} documents (VADER ground-truth sentences) "
            f"through one `expertd pipe sentiment --lines`, output to a file; "
            f"{plural(s['stream_runs'], 'run')}.",
            f"3. RPC: `python -m bench.load` (own process; one stock `zerorpc.Client`, "
            f"N gevent greenlets each calling `sentiment(doc)` in a loop) at concurrency "
            f"{rpc_cs}; {s['rpc_warmup']:g} s warm-up then {s['rpc_seconds']:g} s measured; "
            f"{plural(s['rpc_rounds'], 'round')}, each (concurrency, on/off) once per round. "
            "\"off\" is a second server whose experts file is the default one with "
            "`batch: {max_size: 1}` for sentiment.",
            f"4. HTTP: `wrk -t1 -cN -d{s['http_seconds']:g}s --latency` with a Lua script "
            f"(`bench/post.lua`) POSTing `{{\"text\": ...}}` (500 sentences, cycled) at "
            f"concurrency {http_cs}; {plural(s['http_rounds'], 'round')}, servers interleaved; each "
            f"server first warmed for {s['http_warmup']:g} s. Falcon + bjoern and gunicorn "
            f"(`-k gevent -w {s['gunicorn_workers']}`) serve `bench/falcon_app.py`, which "
            "calls the same `SentimentExpert` inline (one `tf.function` call per request). "
            "The bridge (`node express_bridge/src/server.js`, default settings) calls "
            "expertd's `opinion(\"sentiment\", doc)` over its one zerorpc connection.",
            f"5. Batch: `batch(\"sentiment\", {s['batch_docs']:,} docs)` through "
            f"`clients.wire` vs `bench.inprocess`, a separate process holding the same "
            f"model, {plural(s['batch_rounds'], 'round')} of {plural(s['batch_reps'], 'call')} "
            "each, alternating.",
            "6. Memory: `VmRSS`/`VmHWM` from `/proc/<pid>/status` (summed over a "
            "server's child processes), taken when the servers were ready and at the end.",
            ""]


def render(r: dict) -> str:
    """The whole report as Markdown."""
    m = r["machine"]
    lines = ["# expertd benchmarks", "",
             f"Run {r['started']} "
             f"({'quick smoke run, not for quoting' if r['settings'].get('quick') else 'full run'}), "
             f"{fmt(r['total_s'] / 60, 1)} minutes in all, by `make bench` "
             "(`python -m bench.run`).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
             f"{m['ram_gib']} GiB RAM; {m['kernel']}, {m['os']}. Load average "
             f"{' / '.join(f'{x:.2f}' for x in r['loadavg_start'])} at the start, "
             f"{' / '.join(f'{x:.2f}' for x in r['loadavg_end'])} at the end "
             "(shared machine).", "",
             f"Software: Python {m['python']}, Node {m['node']}, TensorFlow {m['tensorflow']} "
             f"(Keras {m['keras']}), zerorpc {m['zerorpc']} (pyzmq {m['pyzmq']}, gevent "
             f"{m['gevent']}), Express {m['express']} with zerorpc {m['zerorpc_node']} "
             f"(Node), Falcon {m['falcon']}, bjoern {m['bjoern']}, gunicorn {m['gunicorn']}, "
             f"{m['wrk']}.", ""]
    lines += headline(r)
    lines += method(r)
    lines += section_tables(r)
    return "\n".join(lines) + "\n"


def section_tables(r: dict) -> list[str]:
    """One table per section."""
    lines: list[str] = []

    def failed(title: str, data: dict | None) -> bool:
        lines.extend([f"## {title}", ""])
        e = _err(data)
        if e:
            lines.extend([f"_{e}_", ""])
        return bool(e)

    s1 = r.get("s1")
    if not failed("1. Pipe stage: cold (loads TensorFlow) vs warm (asks the server)", s1):
        names = {"cold": "cold: `bench/cold_stage.py`", "warm": "warm: `expertd pipe sentiment`",
                 "floor": "floor: `python -c pass`"}
        rows = [[names[k], fmt(s1[k]["runs"]), fmt(s1[k]["median_ms"]), fmt(s1[k]["min_ms"]),
                 fmt(s1[k]["max_ms"]), fmt(s1[k]["peak_rss_mib"])] for k in names]
        lines += table(["stage (one document)", "runs", "median ms", "min ms", "max ms",
                        "peak RSS MiB"], rows)
        lines += ["", f"Cold / warm: **{times(s1['speedup'])}** (goal >= 70x). A warm stage "
                      f"takes {fmt(s1.get('warm_over_floor_ms'))} ms more than a bare "
                      "`python -c pass` run right after it (median of the pairs): that is "
                      "what expertd's stage adds (its imports, the connection, the call); the "
                      "rest is CPython's own start. Cold and warm give the same label on "
                      f"{s1['labels_agree']} documents both saw.", ""]
    s2 = r.get("s2")
    if not failed("2. Stream: one `expertd pipe sentiment --lines`", s2):
        lines += table(["documents", "runs", "median s", "docs/s (median)", "best docs/s",
                        "worst docs/s", "peak RSS MiB"],
                       [[fmt(s2["documents"]), fmt(s2["runs"]), fmt(s2["median_s"], 2),
                         fmt(s2["docs_per_s"], 0), fmt(s2["best_docs_per_s"], 0),
                         fmt(s2["worst_docs_per_s"], 0), fmt(s2["peak_rss_mib"])]]) + [""]
    s3 = r.get("s3")
    if not failed("3. RPC: single-document `sentiment` calls, micro-batching on vs off", s3):
        rows = []
        for key in sorted(s3, key=lambda k: (s3[k]["concurrency"], s3[k]["arm"] != "on")):
            row = s3[key]
            on = row["arm"] == "on"
            rows.append([row["arm"], fmt(row["concurrency"]), fmt(row["runs"]),
                         fmt(row["calls_per_s"], 0), spread(row["calls_per_s_runs"]),
                         fmt(row["p50_ms"], 2), fmt(row["p99_ms"], 2),
                         times(row.get("throughput_vs_off"), 2) if on else "",
                         times(row.get("paired_vs_off"), 2) if on else "", fmt(row["errors"])])
        lines += table(["batching", "concurrency", "runs", "calls/s", "range", "p50 ms",
                        "p99 ms", "on / off", "on / off paired", "errors"], rows) + [""]
        lines += ["\"on / off\" is the ratio of the medians; \"paired\" the median of the "
                  "per-round ratios. \"on\" is config/experts.yaml as it is (sentiment: "
                  f"`batch: {r.get('sentiment_batch', '?')}`), \"off\" the same with "
                  "`batch: {max_size: 1}`.", ""]
    s4 = r.get("s4")
    if not failed("4. HTTP: POST /experts/sentiment", s4):
        from bench.web import versus

        labels = {"bridge": "Express bridge -> expertd",
                  "bjoern": "Falcon + bjoern (model inline)",
                  "gunicorn": f"Falcon + gunicorn -k gevent -w {r['settings']['gunicorn_workers']}"}
        rows = []
        for key in sorted(s4, key=lambda k: (s4[k]["concurrency"], list(labels).index(
                s4[k]["server"]))):
            row = s4[key]
            vs = versus(s4, row["server"], "bjoern", row["concurrency"])
            base = row["server"] == "bjoern"
            rows.append([labels[row["server"]], fmt(row["concurrency"]), fmt(row["runs"]),
                         fmt(row["rps"], 0), spread(row["rps_runs"]), fmt(row["p50_ms"], 2),
                         fmt(row["p99_ms"], 2), "" if base else pct(vs["rps"]),
                         "" if base else pct(vs["rps_paired"]),
                         "" if base else times(vs["p99"], 2), fmt(row["errors"])])
        lines += table(["server", "concurrency", "runs", "requests/s", "range", "p50 ms",
                        "p99 ms", "req/s vs bjoern", "paired", "p99 vs bjoern", "errors"],
                       rows) + [""]
        if r.get("bridge_error"):
            lines += [f"The bridge was not measured: `{r['bridge_error'][:300]}`", ""]
    s5 = r.get("s5")
    if not failed("5. Batch: `batch(\"sentiment\", docs)` vs the model in-process", s5):
        lines += table(["path", "documents per call", "median ms per call", "docs/s",
                        "server / this"],
                       [["expertd `batch` (zerorpc round trip)", fmt(s5["documents"]),
                         fmt(s5["server_ms"], 2), fmt(s5["server_docs_per_s"], 0), ""],
                        ["in-process `tf.function` (the model alone)", fmt(s5["documents"]),
                         fmt(s5["graph_ms"], 2), fmt(s5["graph_docs_per_s"], 0),
                         pct(s5["vs_graph"])],
                        ["in-process `SentimentExpert.predict` (model + opinion dicts)",
                         fmt(s5["documents"]), fmt(s5["predict_ms"], 2),
                         fmt(s5["predict_docs_per_s"], 0), pct(s5["vs_predict"])]]) + [""]
    s6 = r.get("s6")
    if not failed("6. Memory (resident)", s6):
        labels = {"expertd": "expertd serve, default experts",
                  "expertd_nobatch": "expertd serve, no batching (same experts)",
                  "bridge": "Express bridge (node)", "bjoern": "Falcon + bjoern",
                  "gunicorn": "Falcon + gunicorn (master + workers)"}
        rows = [[labels.get(name, name), fmt(v["ready_rss_mib"], 0), fmt(v["rss_mib"], 0),
                 fmt(v["hwm_mib"], 0)] for name, v in s6["servers"].items()]
        rows.append(["`expertd pipe sentiment`, one document (median / max of runs)",
                     "", "", f"{fmt(s6['stage_single_median_peak_mib'])} / "
                             f"{fmt(s6['stage_single_peak_mib'])}"])
        rows.append([f"`expertd pipe sentiment --lines`, {fmt((r.get('s2') or {}).get('documents'))} "
                     "documents", "", "", fmt(s6["stage_stream_peak_mib"])])
        rows.append(["`bench/cold_stage.py`, one document (median / max of runs)", "", "",
                     f"{fmt(s6['cold_stage_median_peak_mib'])} / "
                     f"{fmt(s6['cold_stage_peak_mib'])}"])
        lines += table(["process", "RSS when ready MiB", "RSS at end MiB", "peak (VmHWM) MiB"],
                       rows) + [""]
    if r.get("startup_s"):
        lines += ["Seconds from spawn to ready (all started together): "
                  + ", ".join(f"{k} {v:g}" for k, v in r["startup_s"].items()) + ".", ""]
    return lines + other_reports()


def other_reports() -> list[str]:
    """Links to the reports the other ``make bench`` modules write (``bench/RESULTS-*.md``)."""
    here = Path(__file__).resolve().parent
    lines = ["## Other reports", "",
             "Written by the other modules `make bench` runs, each in its own run:", ""]
    for path in sorted(here.glob("RESULTS-*.md")):
        title = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                      if line.startswith("# ")), path.stem)
        lines.append(f"- [{path.name}]({path.name}): {title}")
        # A report may give RESULTS.md one line of its own: "Headline: ..." (e.g. the overload row).
        lines += [f"  {line[len('Headline: '):]}" for line in path.read_text().splitlines()
                  if line.startswith("Headline: ")]
    return lines + [""]
