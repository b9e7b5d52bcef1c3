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
   then each default expert built and loaded in the file's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

from bench.common import BENCH, DEFAULT_CONFIG, PYTHON, ROOT, child_env
from bench.report import table
from bench.servers import Fleet

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


def main() -> None:
    began = time.time()
    with Fleet() as fleet:
        server = fleet.expertd("memory-ready", DEFAULT_CONFIG)
        fleet.wait_ready([server])
        time.sleep(2)
        with open(f"/proc/{server.pid}/status") as status:
            vmrss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        rollup, mappings = smaps(server.pid)
    done = subprocess.run([PYTHON, "-c", STEPS, str(DEFAULT_CONFIG)], env=child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    load = os.getloadavg()
    mib = lambda kb: f"{kb / 1024:,.0f}"  # noqa: E731
    rows, previous = [], 0.0
    for name, rss, seconds in steps:
        rows.append([name, f"{rss:,.0f}", f"{rss - previous:+,.0f}", f"{seconds:.2f}"])
        previous = rss
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# What the server holds when ready",
        "",
        f"`python -m bench.memory_ready` on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{when}, {time.time() - began:.0f} s; load average {load[0]:.2f}, {load[1]:.2f}, "
        f"{load[2]:.2f}.",
        "",
        "## `expertd serve` with the default experts, when it answers",
        "",
        *table(["measure", "MiB"], [
            ["VmRSS", mib(vmrss)],
            ["of which anonymous (heaps, objects, TensorFlow buffers)", mib(rollup.get("Anonymous", 0))],
            ["of which file-backed (libraries, mapped files)",
             mib(rollup.get("Rss", 0) - rollup.get("Anonymous", 0))],
        ]),
        "",
        "Largest resident mappings:",
        "",
        *table(["mapping", "resident MiB"], [[f"`{short(path)}`", f"{kb / 1024:,.1f}"]
                                            for path, kb in mappings]),
        "",
        "## The same steps in one process, one at a time",
        "",
        *table(["after", "VmRSS MiB", "step", "seconds"], rows),
        "",
        "## Findings",
        "",
        f"`import tensorflow` alone is {steps[1][1] - steps[0][1]:,.0f} MiB of the "
        f"{steps[-1][1]:,.0f}; most of what it holds is its shared library's touched pages "
        "(file-backed, shared between the workers of one machine), the rest its heap. Beyond "
        "TensorFlow and the first model (what a one-model Falcon server also holds), the "
        "server's own modules add "
        f"{steps[2][1] - steps[1][1]:,.0f} MiB, and the other default experts "
        f"{steps[-1][1] - steps[3][1]:,.0f} MiB: "
        + ", ".join(f"{name.split(' ')[1]} {rss - prev:+,.0f}"
                    for (name, rss, _), (_, prev, _) in zip(steps[4:-1], steps[3:-2]))
        + " MiB (the learner's is river and its dependencies, imported by its load). "
        "Nothing was cut here: the default experts file's second model and its learner are "
        "most of what separates it from the one-model comparison.",
        "",
    ]
    (BENCH / "RESULTS-memory-ready.md").write_text("\n".join(lines))
    print((BENCH / "RESULTS-memory-ready.md").read_text())


if __name__ == "__main__":
    main()
