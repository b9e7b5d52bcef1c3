"""What the server's resident memory holds when it is ready, beyond the models.

``python -m bench.memory_ready`` measures two things and writes
bench/RESULTS-memory-ready.md:

1. One real ``expertd serve`` with the default experts (config/experts.yaml),
   once it answers ``health()``: VmRSS, and from /proc/PID/smaps_rollup how much
   of it is anonymous memory (heaps, Python objects, TensorFlow's buffers) and
   how much is file-backed (shared libraries and mapped files: TensorFlow's
   ~1 GB of .so files are mapped, and the pages touched count as resident);
   and the largest file-backed mappings, from /proc/PID/smaps.
2. The same steps in a fresh Python process, one at a time, VmRSS after each:
   the interpreter; ``import tensorflow``; the server's own modules (zerorpc,
   gevent, pyzmq, prometheus_client, jsonschema-rs, expertd.rpc_server.server);
   then each default expert built and loaded in the file's order, and what
   ``expertd.rpc_server.resident.release_after_start`` then hands back.

``--baseline REV`` runs the server of git revision ``REV`` (extracted under
bench/tmp/, first on ``PYTHONPATH``) beside this checkout's, in alternating
order, ``--rounds`` servers of each; each is also measured after 200 calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

from bench.common import (BENCH, DEFAULT_CONFIG, PYTHON, ROOT, child_env, load_texts, median,
                          proc_status_kib)
from bench.report import table
from bench.servers import Fleet
from bench.startup import extract_revision

#: ``opinions_batch`` calls of 64 documents sent to each server after it is ready.
CALLS = 200

STEPS = r'''
import gc, json, os, sys, time
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
out = [("python started", rss(), 0.0)]
def step(name, fn):
    began = time.perf_counter(); fn(); out.append((name, rss(), time.perf_counter() - began))
step("import tensorflow", lambda: __import__("tensorflow"))
def server_modules():
    import zerorpc, gevent, zmq, prometheus_client, jsonschema_rs  # noqa: F401
    import expertd.rpc_server.server  # noqa: F401
step("the server's modules (zerorpc, gevent, pyzmq, prometheus, jsonschema-rs, expertd)",
     server_modules)
from expertd.experts.config import build_experts, load_config, load_expert
config = load_config(sys.argv[1])
experts = build_experts(config)
for spec in config.experts:
    step(f"expert {spec.name} ({spec.import_string}) loaded",
         lambda spec=spec: load_expert(spec, experts[spec.name]))
step("gc.collect()", gc.collect)
from expertd.rpc_server import resident
step("resident.release_after_start()", resident.release_after_start)
print(json.dumps(out))
'''


def smaps(pid: int) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """``smaps_rollup`` fields (kB) and the largest file-backed mappings' resident kB."""
    rollup = {}
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                rollup[parts[0].rstrip(":")] = int(parts[1])
    by_file: Counter = Counter()
    current = None
    with open(f"/proc/{pid}/smaps") as file:
        for line in file:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:
                path = fields[5] if len(fields) >= 6 else "[anonymous]"
                current = path
            elif fields and fields[0] == "Rss:" and current is not None:
                by_file[current] += int(fields[1])
    return rollup, by_file.most_common(12)


def short(path: str) -> str:
    """A mapping's path without the machine's prefixes."""
    for prefix in (str(ROOT) + "/", sys.prefix + "/", "/usr/lib/x86_64-linux-gnu/"):
        path = path.replace(prefix, "")
    return path if len(path) < 90 else "..." + path[-87:]


def measure(fleet: Fleet, name: str, env: dict, texts: list[str]) -> dict:
    """One ``expertd serve`` with the default experts: what it holds when it answers, then
    after ``CALLS`` calls of ``opinions_batch`` (64 documents, every expert) and the first
    and median call's milliseconds."""
    from expertd.clients.client import ExpertsClient

    server = fleet.expertd(name, DEFAULT_CONFIG, env=env)
    fleet.wait_ready([server])
    time.sleep(2)
    out = {"ready_kb": proc_status_kib(server.pid, "VmRSS")}
    out["rollup"], out["mappings"] = smaps(server.pid)
    seconds = []
    with ExpertsClient(server.url, timeout=120) as client:
        for call in range(CALLS):
            docs = [{"id": i, "text": texts[(call * 64 + i) % len(texts)]} for i in range(64)]
            began = time.perf_counter()
            answers = client.opinions_batch(docs)
            seconds.append(time.perf_counter() - began)
            assert len(answers) == 64
    time.sleep(1)
    out["after_kb"] = proc_status_kib(server.pid, "VmRSS")
    out["after_rollup"], _ = smaps(server.pid)
    out["first_ms"], out["median_ms"] = seconds[0] * 1000, median(seconds) * 1000
    fleet.stop(server)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision whose server runs beside this one")
    parser.add_argument("--rounds", type=int, default=2, help="servers of each arm, interleaved")
    args = parser.parse_args()
    began = time.time()
    arms = {"this checkout": child_env()}
    if args.baseline:
        arms[f"@{args.baseline}"] = child_env(PYTHONPATH=str(extract_revision(args.baseline)))
    texts = load_texts()
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    with Fleet() as fleet:
        for round_no in range(args.rounds):
            names = list(arms) if round_no % 2 == 0 else list(arms)[::-1]
            for name in names:
                runs[name].append(measure(fleet, f"memory-ready-{len(runs[name])}", arms[name],
                                          texts))
    done = subprocess.run([PYTHON, "-c", STEPS, str(DEFAULT_CONFIG)], env=child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    load = os.getloadavg()
    write_report(args, runs, steps, load, time.time() - began)
    print((BENCH / "RESULTS-memory-ready.md").read_text())


def write_report(args, runs: dict, steps: list, load: tuple, elapsed: float) -> None:
    """bench/RESULTS-memory-ready.md."""
    mib = lambda kb: f"{kb / 1024:,.0f}"  # noqa: E731
    med = lambda values: median(list(values))  # noqa: E731
    arm_rows = []
    for name, measured in runs.items():
        anon = med(m["rollup"].get("Anonymous", 0) for m in measured)
        rss = med(m["rollup"].get("Rss", 0) for m in measured)
        after_anon = med(m["after_rollup"].get("Anonymous", 0) for m in measured)
        after_rss = med(m["after_rollup"].get("Rss", 0) for m in measured)
        arm_rows.append([
            f"`{name}`", " / ".join(mib(m["ready_kb"]) for m in measured), mib(anon),
            mib(rss - anon), " / ".join(mib(m["after_kb"]) for m in measured), mib(after_anon),
            mib(after_rss - after_anon),
            " / ".join(f"{m['first_ms']:,.0f}" for m in measured),
            " / ".join(f"{m['median_ms']:,.1f}" for m in measured)])
    rows, previous = [], 0.0
    for name, rss, seconds in steps:
        rows.append([name, f"{rss:,.0f}", f"{rss - previous:+,.0f}", f"{seconds:.2f}"])
        previous = rss
    first = runs["this checkout"][0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# What the server holds when ready",
        "",
        "`python -m bench.memory_ready"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + f" --rounds {args.rounds}` on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{when}, {elapsed:.0f} s; load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}.",
        "",
        "## `expertd serve` with the default experts, when it answers and after calls",
        "",
        f"Each arm's servers in turn (the order alternating by round), one at a time. `ready`: "
        f"VmRSS 2 s after it first answers `health()`; `after calls`: 1 s after {CALLS} "
        "`opinions_batch` calls of 64 documents over every expert (one client, in sequence). "
        "Anonymous: heaps, Python objects, TensorFlow's buffers; file-backed: the pages of "
        "libraries and mapped files the process has mapped (`/proc/PID/smaps_rollup`, medians).",
        "",
        *table(["server", "ready MiB", "anonymous", "file-backed", "after calls MiB",
                "anonymous", "file-backed", "first call ms", "median call ms"], arm_rows),
        "",
        "Largest resident mappings of `this checkout`'s first server when ready:",
        "",
        *table(["mapping", "resident MiB"], [[f"`{short(path)}`", f"{kb / 1024:,.1f}"]
                                            for path, kb in first["mappings"]]),
        "",
        "## The same steps in one process, one at a time (this checkout)",
        "",
        *table(["after", "VmRSS MiB", "step", "seconds"], rows),
        "",
        "## Findings",
        "",
        f"`import tensorflow` alone is {steps[1][1] - steps[0][1]:,.0f} MiB of the "
        f"{steps[-2][1]:,.0f} before the release; most of it is its shared library's "
        "touched pages: code and read-only data that the import runs once (registering its "
        "ops and kernels). The server hands those back once its experts are loaded "
        "(rpc_server/resident.py: `madvise(MADV_DONTNEED)` on clean read-only library "
        "mappings; they stay in the page cache, so a page a call needs again is mapped back "
        "without a disk read), and with them the source lines TensorFlow left in `linecache` "
        "and the heap's free top. What calls need comes back: compare the file-backed "
        "columns after calls. The heap itself is in use (glibc's per-thread arenas held "
        "under 1 MiB and `malloc_trim` alone returned nothing when this was measured). "
        "Beyond TensorFlow and the first model, the server's own modules add "
        f"{steps[2][1] - steps[1][1]:,.0f} MiB, and the other default experts: "
        + ", ".join(f"{name.split(' ')[1]} {rss - prev:+,.0f}"
                    for (name, rss, _), (_, prev, _) in zip(steps[4:-2], steps[3:-3]))
        + " MiB (the learner's is river and scipy, imported by its load).",
        "",
    ]
    (BENCH / "RESULTS-memory-ready.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
