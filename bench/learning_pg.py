"""Benchmark: three servers learning from one feedback log, PostgreSQL vs SQLite, in one run.

Run as ``python -m bench.learning_pg`` (``make bench`` does; it needs Debian's
postgresql, which it starts in a temp dir with fsync on, as tests/e2e does).
For each log, three real ``expertd serve`` processes share it (SQLite: one
state directory on this machine; PostgreSQL: a state directory each, the log
and checkpoints in the database, as on three machines) and the run measures:

1. **In-step delay**: single-example ``learn`` calls to the first server; the
   time from the acknowledgement until both others report its ``model_version``.
2. **Learn throughput**: three teachers, one per server, send the VADER
   training split (``TOTAL`` examples) in calls of ``BATCH``; examples
   acknowledged per second over the whole stream.
3. **Opinions while learning**: sequential one-document opinions on the first
   server, idle and during the throughput stream: p50 and p99.
4. **A fourth server** started after the stream: seconds until it answers
   ``health()`` and until it reaches the others' ``model_version``.

The two logs are measured in alternating rounds (``ROUNDS``); the report gives
medians of the rounds and the machine's load average, since the machine is shared.
Writes bench/RESULTS-learning-pg.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import BENCH, EXPERTD, ROOT, TMP, child_env, free_port, median, percentile
from expertd.clients.wire import CallTimeout, ServerUnavailable, connect

WORK = TMP / "learning-pg"
TOTAL = 20_000
BATCH = 64
ROUNDS = 3
STEP_SAMPLES = 30
OPINIONS = 300
CONFIG = """
server:
  state_dir: {state_dir}
experts:
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {{checkpoint_every: 5000, checkpoint_seconds: 60}}
"""


class Server:
    """A real ``expertd serve`` (log at warning level in WORK)."""

    def __init__(self, name: str, state_dir: Path, feedback_log: str | None) -> None:
        """Start it; ``ready_s`` is how long until it answered ``health()``."""
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        config = WORK / f"{name}.yaml"
        config.write_text(CONFIG.format(state_dir=state_dir))
        extra = ["--feedback-log", feedback_log] if feedback_log else []
        began = time.perf_counter()
        self.process = subprocess.Popen(
            [EXPERTD, "serve", "--config", str(config), "--bind", self.endpoint,
             "--log-level", "warning", *extra], cwd=ROOT, env=child_env(),
            stdout=open(WORK / f"{name}.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {name} exited: see {WORK / (name + '.log')}")
            try:
                with connect(self.endpoint, timeout=2.0) as c:
                    c.call("health")
                    self.ready_s = time.perf_counter() - began
                    return
            except (ServerUnavailable, CallTimeout):
                time.sleep(0.05)
        raise RuntimeError(f"server {name} not ready")

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.terminate()
        self.process.wait(60)


def version_of(connection) -> int:
    """The learner's ``model_version`` from ``health()``."""
    return connection.call("health")["learning"]["learner"]["model_version"]


def in_step(servers: list[Server], train: list) -> list[float]:
    """Milliseconds from each one-example learn's acknowledgement until every other server applied it."""
    delays = []
    with connect(servers[0].endpoint, timeout=30) as a, \
            connect(servers[1].endpoint, timeout=30) as b, \
            connect(servers[2].endpoint, timeout=30) as c:
        for i in range(STEP_SAMPLES):
            text, _, source = train[i]
            version = a.call("learn", "learner", [{"text": text, "label": source}])["applied_at_version"]
            began = time.perf_counter()
            waiting = [b, c]
            while waiting:
                waiting = [x for x in waiting if version_of(x) < version]
                if waiting:
                    time.sleep(0.002)
            delays.append((time.perf_counter() - began) * 1000)
            time.sleep(0.05)
    return sorted(delays)


def opinion_ms(endpoint: str, texts: list[str], stop: threading.Event | None = None) -> list[float]:
    """Milliseconds of ``OPINIONS`` sequential one-document opinions (fewer if ``stop`` is set)."""
    out = []
    with connect(endpoint, timeout=30) as c:
        for i in range(OPINIONS):
            if stop is not None and stop.is_set():
                break
            began = time.perf_counter()
            c.call("opinion", "learner", {"text": texts[i % len(texts)]})
            out.append((time.perf_counter() - began) * 1000)
    return sorted(out)


def stream(servers: list[Server], train: list, texts: list[str]) -> dict:
    """Three teachers, one per server, TOTAL examples in all; opinions on the first meanwhile."""
    examples = [{"text": t, "label": s} for t, _, s in (train * (TOTAL // len(train) + 1))[:TOTAL]]
    parts = [examples[n::3] for n in range(3)]
    done = threading.Event()
    failures = []

    def teach(server: Server, part: list) -> None:
        with connect(server.endpoint, timeout=60) as c:
            for start in range(0, len(part), BATCH):
                try:
                    c.call("learn", "learner", part[start:start + BATCH])
                except Exception as exc:  # counted, not retried
                    failures.append(type(exc).__name__)

    teachers = [threading.Thread(target=teach, args=(s, p)) for s, p in zip(servers, parts)]
    began = time.perf_counter()
    for t in teachers:
        t.start()
    busy = []
    watcher = threading.Thread(target=lambda: busy.extend(opinion_ms(servers[0].endpoint, texts, done)))
    watcher.start()
    for t in teachers:
        t.join()
    seconds = time.perf_counter() - began
    done.set()
    watcher.join()
    return {"examples_per_s": TOTAL / seconds, "seconds": seconds, "failures": failures,
            "busy": sorted(busy)}


def measure(kind: str, feedback_log: str | None, train: list, texts: list[str], round_: int) -> dict:
    """One round for one log: in-step, idle opinions, the stream, then a fourth server."""
    base = WORK / f"{kind}-{round_}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    dirs = [base / "shared"] * 4 if feedback_log is None else [base / f"m{n}" for n in range(4)]
    servers = [Server(f"{kind}-{round_}-{n}", dirs[n], feedback_log) for n in range(3)]
    try:
        step = in_step(servers, train)
        idle = opinion_ms(servers[0].endpoint, texts)
        load_before = os.getloadavg()[0]
        streamed = stream(servers, train, texts)
        with connect(servers[0].endpoint, timeout=30) as c:
            target = version_of(c)
        fourth = Server(f"{kind}-{round_}-3", dirs[3], feedback_log)
        servers.append(fourth)
        began = time.perf_counter()
        with connect(fourth.endpoint, timeout=30) as c:
            first = c.call("health")["learning"]["learner"]
            while version_of(c) < target:
                time.sleep(0.05)
        catch_up = time.perf_counter() - began
    finally:
        for server in servers:
            server.stop()
    return {"step": step, "idle": idle, "stream": streamed, "load": load_before,
            "first_ready_s": median(s.ready_s for s in servers[:3]),
            "fourth_ready_s": fourth.ready_s, "fourth_catch_up_s": catch_up,
            "fourth_replay_total": first["replay_total"]}


def summarise(rounds: list[dict]) -> dict:
    """Medians over rounds."""
    return {
        "step_median_ms": median(percentile(r["step"], 50) for r in rounds),
        "step_p90_ms": median(percentile(r["step"], 90) for r in rounds),
        "step_max_ms": max(r["step"][-1] for r in rounds),
        "examples_per_s": median(r["stream"]["examples_per_s"] for r in rounds),
        "idle_p50_ms": median(percentile(r["idle"], 50) for r in rounds),
        "idle_p99_ms": median(percentile(r["idle"], 99) for r in rounds),
        "busy_p50_ms": median(percentile(r["stream"]["busy"], 50) for r in rounds),
        "busy_p99_ms": median(percentile(r["stream"]["busy"], 99) for r in rounds),
        "failures": sum(len(r["stream"]["failures"]) for r in rounds),
        "first_ready_s": median(r["first_ready_s"] for r in rounds),
        "fourth_ready_s": median(r["fourth_ready_s"] for r in rounds),
        "fourth_catch_up_s": median(r["fourth_catch_up_s"] for r in rounds),
        "fourth_replay_total": median(r["fourth_replay_total"] for r in rounds),
        "load": [round(r["load"], 2) for r in rounds],
        "step_medians": [round(percentile(r["step"], 50), 1) for r in rounds],
        "busy_p99s": [round(percentile(r["stream"]["busy"], 99), 1) for r in rounds],
        "rates": [round(r["stream"]["examples_per_s"]) for r in rounds],
    }


def write_report(results: dict, machine: str) -> str:
    """The Markdown report."""
    pg, lite = results["postgresql"], results["sqlite"]
    row = "| {} | {} | {} |"
    lines = [
        "# Three servers on one feedback log: PostgreSQL vs SQLite (`python -m bench.learning_pg`)", "",
        f"Machine: {machine}. One run, {ROUNDS} alternating rounds per log (medians of the "
        "rounds); the machine is shared with other work: its 1-minute load average before each "
        f"stream was {pg['load']} (PostgreSQL rounds) and {lite['load']} (SQLite rounds).", "",
        "Three `expertd serve` processes learn from one log: SQLite (one state directory on this "
        "machine, each server polls every 150 ms) or PostgreSQL 15 from Debian, fsync on (a "
        "state directory each, log and checkpoints in the database, woken by NOTIFY).", "",
        "| | PostgreSQL | SQLite |", "|---|---:|---:|",
        row.format(f"in-step delay, median of {STEP_SAMPLES} one-example calls (ms)",
                   f"{pg['step_median_ms']:.1f}", f"{lite['step_median_ms']:.1f}"),
        row.format("in-step delay, p90 (ms)", f"{pg['step_p90_ms']:.1f}", f"{lite['step_p90_ms']:.1f}"),
        row.format("in-step delay, max (ms)", f"{pg['step_max_ms']:.1f}", f"{lite['step_max_ms']:.1f}"),
        row.format(f"learn throughput, {TOTAL:,} examples in calls of {BATCH} into 3 servers "
                   "(examples/s)", f"{pg['examples_per_s']:,.0f}", f"{lite['examples_per_s']:,.0f}"),
        row.format("learn calls failed", pg["failures"], lite["failures"]),
        row.format(f"opinion p50, idle ({OPINIONS} sequential calls, ms)",
                   f"{pg['idle_p50_ms']:.2f}", f"{lite['idle_p50_ms']:.2f}"),
        row.format("opinion p99, idle (ms)", f"{pg['idle_p99_ms']:.2f}", f"{lite['idle_p99_ms']:.2f}"),
        row.format("opinion p50 while the three servers learn (ms)",
                   f"{pg['busy_p50_ms']:.2f}", f"{lite['busy_p50_ms']:.2f}"),
        row.format("opinion p99 while the three servers learn (ms)",
                   f"{pg['busy_p99_ms']:.2f}", f"{lite['busy_p99_ms']:.2f}"),
        row.format("first three servers, empty log: seconds until each answers health() (median)",
                   f"{pg['first_ready_s']:.2f}", f"{lite['first_ready_s']:.2f}"),
        row.format("fourth server: seconds until it answers health()",
                   f"{pg['fourth_ready_s']:.2f}", f"{lite['fourth_ready_s']:.2f}"),
        row.format("fourth server: examples it replayed after its checkpoint",
                   f"{pg['fourth_replay_total']:,.0f}", f"{lite['fourth_replay_total']:,.0f}"),
        row.format("fourth server: seconds until it reaches the others' model_version",
                   f"{pg['fourth_catch_up_s']:.2f}", f"{lite['fourth_catch_up_s']:.2f}"),
        "",
        "Each round on its own (each cell PostgreSQL / SQLite; the two logs take turns going "
        "first), with the machine's 1-minute load average before its stream:", "",
        "| round | in-step median ms | opinion p99 while learning ms | examples/s | load |",
        "|---|---|---|---|---|",
        *[f"| {n + 1} | {pg['step_medians'][n]} / {lite['step_medians'][n]} | "
          f"{pg['busy_p99s'][n]} / {lite['busy_p99s'][n]} | {pg['rates'][n]} / {lite['rates'][n]} | "
          f"{pg['load'][n]} / {lite['load'][n]} |" for n in range(len(pg['load']))],
        "",
        f"In-step median with PostgreSQL: **{pg['step_median_ms']:.1f} ms** (target: under 100 ms). "
        "The fourth server is started after the stream with an empty state directory: with "
        "PostgreSQL it restores the latest checkpoint from the database; with SQLite it shares "
        "the others' state directory and its checkpoint file.", "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Run the rounds, alternating the logs, and write the report."""
    from bench.machine import machine, now
    from expertd.experts.data import load_ground_truth
    from expertd.experts.train import split
    from tests.e2e.pg_server import PostgresServer

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    train, _ = split(load_ground_truth(ROOT / "data"))
    texts = [t for t, _, _ in train[-OPINIONS:]]
    postgres = PostgresServer(fsync=True)
    postgres.start()
    rounds = {"postgresql": [], "sqlite": []}
    try:
        for n in range(ROUNDS):
            for kind in (("postgresql", "sqlite") if n % 2 == 0 else ("sqlite", "postgresql")):
                if kind == "postgresql":
                    with __import__("psycopg").connect(postgres.url, autocommit=True) as conn:
                        conn.execute("DROP TABLE IF EXISTS expertd_examples, expertd_checkpoints, "
                                     "expertd_schema")
                print(f"round {n + 1}: {kind}", file=sys.stderr)
                rounds[kind].append(measure(kind, postgres.url if kind == "postgresql" else None,
                                            train, texts, n))
    finally:
        postgres.destroy()
    results = {kind: summarise(r) for kind, r in rounds.items()}
    m = machine()
    described = (f"{m['cpu']}, {m['usable_cores']} usable cores, {m['ram_gib']} GiB, {m['os']}, "
                 f"Python {m['python']}, zerorpc {m['zerorpc']}; {now()}")
    report = write_report(results, described)
    (BENCH / "RESULTS-learning-pg.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
