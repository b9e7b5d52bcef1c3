"""CPU per streamed document, stage and server, this code side by side with a baseline.

``python -m bench.stream_cpu --baseline REV [--rounds 5] [--workers 2] [--connections 2]
[--this-batch-size N ...] [--base-batch-size N ...]`` starts two ``expertd serve``
holding only the sentiment model (``bench.scale.sentiment_config``, ``--workers``
each): one of this checkout and one of ``REV`` (``git archive``, first on
``PYTHONPATH``). Each arm streams ``bench.scale.stream_input()`` (100,000 VADER
sentences) through ``expertd pipe sentiment --lines`` of the same code as its server,
with a ``--batch-size`` (none: the code's default). Rounds interleave the arms (the
order reversed every other round; round 0 warms up and is not counted). Per run it
records documents/s (wall), the stage's CPU (``RUSAGE_CHILDREN``) and the server's
(utime + stime of the supervisor and its workers, ``/proc``), each per document, and
checks that every arm wrote the same lines (opinions aside: their last digits
may differ with how the server's batcher grouped the documents). Prints a Markdown table (medians of rounds);
``--append FILE`` adds it, as a section, to a report.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import time
from pathlib import Path

from bench.common import EXPERTD, TMP, child_env, median, tree_cpu_seconds
from bench.report import table
from bench.scale import sentiment_config, stream_input
from bench.servers import Fleet
from bench.startup import extract_revision


def stream_once(endpoint: str, jsonl: Path, env: dict, batch_size: int | None,
                connections: int, server_pid: int) -> tuple[float, float, float, str, int]:
    """One stream: documents/s, stage and server CPU µs a document, the output's digest, lines."""
    out_path = TMP / "stream-cpu.out.jsonl"
    command = [EXPERTD, "pipe", "sentiment", "--lines", "--endpoint", endpoint,
               "--connections", str(connections)]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    server_before = tree_cpu_seconds(server_pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(jsonl, "rb") as stdin, open(out_path, "wb") as stdout:
        done = subprocess.run(command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = tree_cpu_seconds(server_pid) - server_before
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited with {done.returncode}: {done.stderr[-2000:]!r}")
    data = out_path.read_bytes()
    lines = data.count(b"\n")
    # The documents as they came, without the opinions: the model's last digits may differ
    # with how the server's batcher happened to group documents.
    kept = b"\n".join(line[:line.rfind(b', "opinions": ')] for line in data.splitlines())
    stage = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return (lines / wall, stage / lines * 1e6, server / lines * 1e6,
            hashlib.sha256(kept).hexdigest(), lines)


def main() -> None:
    """Start both servers, stream interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--this-batch-size", type=int, nargs="*", default=[None],
                        help="batch sizes of this code's arms (none given: its default)")
    parser.add_argument("--base-batch-size", type=int, nargs="*", default=[None],
                        help="batch sizes of the baseline's arms (none given: its default)")
    parser.add_argument("--append", type=Path, help="a Markdown report to add the table to")
    args = parser.parse_args()
    jsonl = stream_input()
    base_env = child_env(PYTHONPATH=str(extract_revision(args.baseline)))
    this_env = child_env()
    serve_args = ("--workers", str(args.workers))
    with Fleet() as fleet:
        servers = {"this": fleet.expertd("stream-this", sentiment_config(), args=serve_args),
                   "base": fleet.expertd("stream-base", sentiment_config(), env=base_env,
                                         args=serve_args)}
        fleet.wait_ready(list(servers.values()))
        time.sleep(5)  # the second worker may come up after the first answers
        arms = [("this", size) for size in args.this_batch_size or [None]]
        arms += [("base", size) for size in args.base_batch_size or [None]]
        envs = {"this": this_env, "base": base_env}
        results: dict = {arm: [] for arm in arms}
        digests: dict = {}
        for round_no in range(args.rounds + 1):
            for arm in arms if round_no % 2 == 0 else arms[::-1]:
                code, size = arm
                server = servers[code]
                rate, stage, serve, digest, lines = stream_once(
                    server.url, jsonl, envs[code], size, args.connections, server.pid)
                digests.setdefault(arm, set()).add(digest)
                if round_no:
                    results[arm].append((rate, stage, serve))
    same = len(set().union(*digests.values())) == 1
    rows = []
    for (code, size), values in results.items():
        label = "this" if code == "this" else args.baseline
        stage, serve = median(v[1] for v in values), median(v[2] for v in values)
        rows.append([label, "default" if size is None else str(size),
                     f"{median(v[0] for v in values):,.0f}", f"{stage:.1f}", f"{serve:.1f}",
                     f"{median(v[1] + v[2] for v in values):.1f}"])
    load, when = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sizes = "".join(f" --{code}-batch-size " + " ".join(map(str, given))
                    for code, given in (("this", args.this_batch_size),
                                        ("base", args.base_batch_size)) if given != [None])
    lines = [f"## One stream, this code side by side with {args.baseline}", "",
             f"`python -m bench.stream_cpu --baseline {args.baseline} --rounds {args.rounds} "
             f"--workers {args.workers} --connections {args.connections}{sizes}`, {when}, load average "
             f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}. Two servers holding the sentiment "
             f"model ({args.workers} workers each), one of each code; each arm streams "
             f"{lines_count(jsonl):,} VADER sentences through `expertd pipe sentiment --lines "
             f"--connections {args.connections}` of its server's code. Rounds interleaved "
             "(order reversed every other round, a warm-up round not counted); medians of "
             f"{args.rounds} rounds. Stage CPU: the stage process's utime + stime; server CPU: the "
             "supervisor's and its workers' (the model's included). Every arm wrote the same "
             f"lines, opinions aside: {'yes' if same else 'NO'}.", "",
             *table(["code", "--batch-size", "docs/s", "stage CPU µs/doc", "server CPU µs/doc",
                     "total µs/doc"], rows), ""]
    print("\n".join(lines))
    if args.append:
        with args.append.open("a") as report:
            report.write("\n" + "\n".join(lines))


def lines_count(path: Path) -> int:
    """Lines in ``path``."""
    with open(path, "rb") as data:
        return sum(1 for _ in data)


if __name__ == "__main__":
    main()
