"""The floors under issue #28's targets: what the transport and the model cost with no expertd work.

``python -m bench.limits [--rounds 9] [--calls 8]`` measures, side by side in one run:

* **Batch.** ``batch("sentiment", 1,000 docs)`` from one ``clients.wire`` client to
  (a) expertd holding the sentiment model, (b) an *echo server*: a stock
  ``zerorpc.Server`` (gevent, pyzmq, msgpack: the stack the design card names)
  whose ``batch`` returns 1,000 ready-made sentiment opinions without looking at
  the documents, and (c) the model alone in a process of its own
  (``bench.inprocess``: the same ``tf.function`` on the same texts). The echo
  server's time per call is the transport's floor: what carrying the documents
  in and the opinions out costs with no validation, no batching, no model. Since
  a call's documents must arrive before the model can start and its opinions
  leave after it ends, ``model / (model + floor)`` bounds what a batch call over
  this transport can reach of the model's own throughput. And (d) a *bare model
  server*: a stock ``zerorpc.Server`` that loads the sentiment expert as expertd
  does (``SentimentExpert.load``) and answers ``batch`` with the expert's own
  ``predict`` on the documents' texts, in the gevent loop's thread: no
  validation, no batcher, no thread pool, no output checks. It is the least any
  server on this stack does while really running the model, so ``model / bare``
  is what such a server reaches of the model's throughput and expertd minus
  bare is expertd's own work. Every round runs the three servers, in an order
  reversed every other round, then the model alone.
* **Stream.** ``expertd pipe sentiment --lines --batch-size B`` over 100,000
  documents to expertd, to the echo server (its ``opinions_batch`` answers
  every document with the same opinion) and to the bare model server (the
  expert's ``predict`` on each call's texts, answered as ``only_opinions``
  answers): CPU per document of the stage and of each server (utime + stime
  from ``/proc``), and the model's own CPU per document at calls of B
  documents, in-process. Stage + echo server is what the stage and the
  transport cost with no model and no expertd server work; adding the model's
  own CPU per document gives the floor of a stream over this design. Stage +
  bare server is what a stream costs with a server doing only the model's work.
  Both stock servers ignore the stage's ``as_json`` option (they answer maps,
  which the stage encodes itself), so compare stage + server, not each alone.

Writes bench/RESULTS-limits.md (and the raw numbers to bench/tmp/limits.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.batch import _read_line
from bench.common import (BENCH, EXPERTD, PYTHON, TMP, child_env, cpu_seconds, free_port,
                          load_texts, median, write_jsonl, write_texts)
from bench.report import fmt, table
from bench.servers import Fleet
from bench.startup import sentiment_config

RESULTS = BENCH / "RESULTS-limits.md"
RAW = TMP / "limits.json"
BATCH_DOCS = 1000
STREAM_DOCS = 100_000
#: The stream table's name of each server arm.
ARM_NAMES = {"bare": "bare model server"}
#: The opinion the echo server gives every document (a real answer of the sentiment model).
OPINION = {"valence": -0.7869, "label": "negative", "confidence": 0.8049}


def echo_server(endpoint: str) -> None:
    """Serve ``batch`` and ``opinions_batch`` with ready-made answers (stock zerorpc)."""
    import zerorpc

    class Echo:
        """Answers without looking at the documents."""

        def health(self):
            """Ready."""
            return {"status": "ok"}

        def batch(self, name, docs):
            """One ready-made opinion per document."""
            return [OPINION] * len(docs)

        def opinions_batch(self, docs, names=None, options=None):
            """One ready-made answer per document, as ``only_opinions`` gives it."""
            return [{"opinions": {"sentiment": OPINION}}] * len(docs)

    server = zerorpc.Server(Echo())
    server.bind(endpoint)
    server.run()


def bare_server(endpoint: str) -> None:
    """Serve ``batch`` and ``opinions_batch`` with the sentiment model and nothing else (stock
    zerorpc): the expert loaded as expertd loads it, its own ``predict`` on the documents'
    texts, no validation, no batcher, no thread pool, no output checks. TensorFlow keeps its
    own pool sizes (nothing else runs beside the model here; expertd's one process leaves
    its loop a core, which bench/RESULTS-model-threads.md measures apart). Like the echo server
    it ignores ``options`` (answers are maps, never ``as_json`` text: the stage copes)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import zerorpc

    from bench.common import MODEL_DIR
    from expertd.experts.keras_text import SentimentExpert

    expert = SentimentExpert("sentiment", model_dir=str(MODEL_DIR))
    expert.load()  # before binding: it answers health only once the model is loaded
    predict = expert.predict

    class Bare:
        """The model's work only, in the gevent loop's thread (one client at a time)."""

        def health(self):
            """Ready."""
            return {"status": "ok"}

        def batch(self, name, docs):
            """The expert's opinion of each document's text, as expertd's ``batch`` answers."""
            return predict([doc["text"] for doc in docs])

        def opinions_batch(self, docs, names=None, options=None):
            """The same, as ``only_opinions`` gives it."""
            return [{"opinions": {"sentiment": opinion}}
                    for opinion in predict([doc["text"] for doc in docs])]

    server = zerorpc.Server(Bare())
    server.bind(endpoint)
    server.run()


def _model_passes(worker, reps: int) -> tuple[list[float], float]:
    """``reps`` passes of the in-process model: wall seconds per pass, CPU seconds in all."""
    worker.process.stdin.write(json.dumps({"reps": reps}) + "\n")
    worker.process.stdin.flush()
    result = _read_line(worker, 240.0)
    return result["graph_s"], sum(result["graph_cpu_s"])


def batch_section(expertd, echo, bare, worker, texts: list[str], rounds: int,
                  calls: int) -> dict:
    """ms per 1,000-document call: expertd, the echo server, the bare model server and the
    model alone, interleaved."""
    from expertd.clients.wire import Connection

    docs = [{"text": t} for t in texts[:BATCH_DOCS]]
    _read_line(worker, 240.0)  # READY
    times: dict[str, list[float]] = {"expertd": [], "echo": [], "bare": [], "model": []}
    cpu: dict[str, list[float]] = {"expertd": [], "echo": [], "bare": []}
    with Connection(expertd.url, timeout=120.0) as to_expertd, \
            Connection(echo.url, timeout=120.0) as to_echo, \
            Connection(bare.url, timeout=120.0) as to_bare:
        targets = {"expertd": (to_expertd, expertd.pid), "echo": (to_echo, echo.pid),
                   "bare": (to_bare, bare.pid)}
        answers = {}
        for name, (connection, _) in targets.items():
            for _ in range(3):
                answers[name] = connection.call("batch", "sentiment", docs)
            if len(answers[name]) != len(docs):
                raise RuntimeError(f"{name}'s batch answered {len(answers[name])} of "
                                   f"{len(docs)} documents")
        if answers["bare"] != answers["expertd"]:
            raise RuntimeError("the bare model server's opinions differ from expertd's")
        for r in range(rounds):
            order = ["expertd", "echo", "bare"]
            order = order if r % 2 == 0 else order[::-1]
            for name in order:
                connection, pid = targets[name]
                before = cpu_seconds(pid)
                for _ in range(calls):
                    began = time.perf_counter()
                    connection.call("batch", "sentiment", docs)
                    times[name].append(time.perf_counter() - began)
                cpu[name].append((cpu_seconds(pid) - before) / calls)
            passes, _ = _model_passes(worker, calls)
            times["model"] += passes
            print(f"round {r + 1}/{rounds} batch: " + ", ".join(
                f"{name} {median(values) * 1e3:.2f} ms" for name, values in times.items()),
                file=sys.stderr)
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    return {"ms": ms, "server_cpu_ms": {k: median(v) * 1e3 for k, v in cpu.items()},
            "calls": {k: len(v) for k, v in times.items()}}


def _stream_once(endpoint: str, jsonl: Path, batch_size: int, server_pid: int) -> dict:
    out_path = TMP / "limits-stream.out.jsonl"
    server_before = cpu_seconds(server_pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with open(jsonl, "rb") as stdin, open(out_path, "wb") as stdout:
        done = subprocess.run([EXPERTD, "pipe", "sentiment", "--lines", "--endpoint", endpoint,
                               "--batch-size", str(batch_size), "--connections", "1"],
                              stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                              env=child_env(), timeout=600)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"expertd pipe failed ({done.returncode}): {done.stderr[-1500:]!r}")
    with open(out_path, "rb") as f:
        lines = sum(1 for _ in f)
    if lines != STREAM_DOCS:
        raise RuntimeError(f"expertd pipe wrote {lines} of {STREAM_DOCS} lines")
    stage = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"docs_per_s": STREAM_DOCS / wall,
            "stage_us": stage / STREAM_DOCS * 1e6,
            "server_us": (cpu_seconds(server_pid) - server_before) / STREAM_DOCS * 1e6}


def stream_section(expertd, echo, bare, workers: dict, jsonl: Path, batch_sizes: list[int],
                   rounds: int) -> dict:
    """CPU per streamed document: stage and server, expertd vs the echo server vs the bare
    model server; the model's own at each call size of ``workers`` (in-process model
    processes, by call size)."""
    runs: dict[str, list[dict]] = {}
    model_us: dict[int, list[float]] = {size: [] for size in workers}
    for worker in workers.values():
        _read_line(worker, 240.0)  # READY
    for r in range(rounds):
        for size in batch_sizes:
            targets = [("expertd", expertd), ("echo", echo), ("bare", bare)]
            for name, server in (targets if r % 2 == 0 else targets[::-1]):
                result = _stream_once(server.url, jsonl, size, server.pid)
                runs.setdefault(f"{name}:{size}", []).append(result)
        for size, worker in workers.items():
            reps = max(5, 20_000 // size)
            _, model_cpu = _model_passes(worker, reps)
            model_us[size].append(model_cpu / (reps * size) * 1e6)
        print(f"round {r + 1}/{rounds} stream done", file=sys.stderr)
    summary = {}
    for arm, results in runs.items():
        summary[arm] = {key: median(x[key] for x in results)
                        for key in ("docs_per_s", "stage_us", "server_us")}
    return {"arms": summary, "model_us": {size: median(v) for size, v in model_us.items()},
            "rounds": rounds}


def essential_us(jsonl: Path, rounds: int = 7) -> float:
    """CPU µs per document of the least work a stream over this transport does per document,
    in C calls with one Python step per line around them, in this process (no sockets, no
    model): the stage carries each line's bytes to the server as they are (one msgpack array
    of bytes), the server decodes each line's JSON once and encodes the opinion as JSON
    text, which travels back as bytes and is spliced into the line. The median of
    ``rounds`` passes over the stream."""
    import msgpack

    from expertd import jsonc

    lines = jsonl.read_bytes().splitlines()
    decode, encode = jsonc.Decoder().decode, jsonc.encoder()
    opinions = {"sentiment": OPINION}
    passes = []
    for _ in range(rounds):
        began = time.process_time()
        for i in range(0, len(lines), BATCH_DOCS):
            chunk = lines[i:i + BATCH_DOCS]
            received = msgpack.unpackb(msgpack.packb(chunk))  # stage -> server
            docs = [decode(line.decode()) for line in received]  # the server reads them
            answers = msgpack.packb([encode(opinions).encode() for _ in docs])  # server -> stage
            b"".join(line[:-1] + b', "opinions": ' + answer + b"}\n"
                     for line, answer in zip(chunk, msgpack.unpackb(answers)))
        passes.append((time.process_time() - began) / len(lines) * 1e6)
    return median(passes)


def render(raw: dict) -> str:
    """bench/RESULTS-limits.md from the raw numbers."""
    b = raw["batch"]
    ms = b["ms"]
    floor = ms["echo"]
    ceiling = ms["model"] / (ms["model"] + floor)
    lines = [
        "# The floors under issue #28's targets",
        "",
        f"`python -m bench.limits --rounds {raw['rounds']} --calls {raw['calls']}` on "
        f"{raw['host']} ({raw['cpus']} cores), {raw['when']}; load average "
        f"{', '.join(f'{x:.2f}' for x in raw['load_before'])} before, "
        f"{', '.join(f'{x:.2f}' for x in raw['load_after'])} after (the machine is shared: "
        "compare only within this run). See the module's docstring for the method.",
        "",
        "## Batch: `batch(\"sentiment\", 1,000 docs)`",
        "",
        "One `clients.wire` client; rounds interleave expertd, the echo server (a stock "
        "`zerorpc.Server` answering 1,000 ready-made opinions without looking at the "
        "documents), the bare model server (a stock `zerorpc.Server` answering with the "
        "sentiment expert's own `predict`, loaded as expertd loads it) and the model alone "
        "in-process (`tf.function`, same texts).",
        "",
        *table(["path", "calls", "ms a call (median)", "server CPU ms a call (median)",
               "model / this"],
              [["expertd (model + expertd's work + transport)", str(b["calls"]["expertd"]),
                fmt(ms["expertd"], 2), fmt(b["server_cpu_ms"]["expertd"], 2),
                f"{ms['model'] / ms['expertd']:.0%}"],
               *([["bare model server (stock zerorpc + the expert's own predict, no checks, "
                   "no batching)", str(b["calls"]["bare"]), fmt(ms["bare"], 2),
                   fmt(b["server_cpu_ms"]["bare"], 2), f"{ms['model'] / ms['bare']:.0%}"]]
                 if "bare" in ms else []),
               ["echo server (transport only: zerorpc, msgpack, ZeroMQ, both ends)",
                str(b["calls"]["echo"]), fmt(floor, 2), fmt(b["server_cpu_ms"]["echo"], 2), ""],
               ["model alone, in-process", str(b["calls"]["model"]), fmt(ms["model"], 2), "", ""]]),
        "",
        f"A call's documents must arrive before the model starts and its opinions leave after "
        f"it ends, so over this transport a call takes at least model + floor = "
        f"{ms['model']:.2f} + {floor:.2f} ms: **at most {ceiling:.0%}** of the model's own "
        f"throughput with expertd doing no work at all (the issue's target: 80%). expertd's "
        f"own work (validation, batching, output checks, answers) is the rest: "
        f"{ms['expertd'] - ms['model'] - floor:.2f} ms a call in this run.",
        "",
        *([f"A bare model server (stock zerorpc, the same model and the expert's own predict, "
           f"no checks, no batching) takes {ms['bare']:.2f} ms a call: it reaches "
           f"**{ms['model'] / ms['bare']:.0%} of the model's in-process throughput**. That is "
           f"what a server doing only the model's work reaches on this stack, so the gap "
           f"between it and expertd ({ms['expertd'] - ms['bare']:+.2f} ms a call in this run) is "
           f"expertd's own work; the bare server's "
           f"{ms['bare'] - ms['model'] - floor:+.2f} ms over model + floor is what serving the "
           f"model costs beyond the transport (turning its outputs into opinion dicts, the "
           f"texts' tensor, TensorFlow inside a server process).", ""]
          if "bare" in ms else []),
        "## Stream: `expertd pipe sentiment --lines`, 100,000 documents",
        "",
        "One stage (`--connections 1`) per run, to expertd (one process), to the echo "
        "server (its `opinions_batch` answers each document with the same opinion) and to "
        "the bare model server (the expert's own predict on each call's texts, nothing "
        "else); CPU per document of the stage and of the server process; the model's own "
        "CPU per document at calls of the same size, in-process. Both stock servers ignore "
        "the stage's `as_json` option and answer maps, which the stage encodes itself "
        "(expertd answers JSON text it splices in): compare their stage and server columns "
        "together.",
        "",
    ]
    s = raw["stream"]
    rows = []
    for arm, values in s["arms"].items():
        name, size = arm.split(":")
        rows.append([ARM_NAMES.get(name, name), size, fmt(values["docs_per_s"], 0),
                     fmt(values["stage_us"], 1), fmt(values["server_us"], 1),
                     fmt(values["stage_us"] + values["server_us"], 1)])
    lines.extend(table(["server", "--batch-size", "docs/s", "stage CPU µs/doc",
                        "server CPU µs/doc", "together"], rows))
    lines.append("")
    lines.extend(table(["documents per model call", "model alone: CPU µs/doc (in-process, every thread)"],
                       [[str(size), fmt(us, 1)] for size, us in s["model_us"].items()]))
    lines.append("")
    for size, model in s["model_us"].items():
        if f"echo:{size}" not in s["arms"]:
            continue
        echo = s["arms"][f"echo:{size}"]
        floor_us = echo["stage_us"] + echo["server_us"] + model
        lines.append(f"- Calls of {size}: today's stage and the transport with no model "
                     f"({echo['stage_us'] + echo['server_us']:.1f} µs) plus the model alone "
                     f"({model:.1f} µs) = **{floor_us:.1f} µs of CPU per document** before "
                     f"expertd's server does any work of its own (the issue's target: 15).")
    for size in sorted({int(arm.split(":")[1]) for arm in s["arms"]}):
        if f"bare:{size}" not in s["arms"] or f"expertd:{size}" not in s["arms"]:
            continue
        bare = s["arms"][f"bare:{size}"]
        expertd = s["arms"][f"expertd:{size}"]
        bare_us = bare["stage_us"] + bare["server_us"]
        expertd_us = expertd["stage_us"] + expertd["server_us"]
        lines.append(f"- Calls of {size}: a bare model server (stock zerorpc, the same model and "
                     f"the expert's own predict, no checks, no batching) costs stage "
                     f"{bare['stage_us']:.1f} + server {bare['server_us']:.1f} = "
                     f"**{bare_us:.1f} µs of CPU per document**: what a server doing only the "
                     f"model's work costs. expertd's {expertd_us:.1f} µs differs by "
                     f"{expertd_us - bare_us:+.1f} µs: expertd's own work.")
    essential = s["essential_us"]
    best = min(s["model_us"].values())
    lines += [
        f"- The least work a stream over this transport does per document, in C calls with "
        f"one Python step per line (carry the line's bytes over, decode its JSON once, encode "
        f"the opinion as JSON, carry it back and splice it in; `essential_us`, in-process, no "
        f"sockets): **{essential:.1f} µs**. With the model's "
        f"own {best:.1f} µs at its best call size that is {essential + best:.1f} µs per "
        f"document with no system call, no check and no batching counted.",
        f"- On {raw['cpus']} cores, 80,000 documents/s leaves at most "
        f"{raw['cpus'] / 80_000 * 1e6:.0f} µs of CPU per document for everything on the "
        f"machine (stage, server, model, and the benchmark's own reading and writing).",
        ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Start the servers and the in-process models, run both sections, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--stream-rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="256,1000", help="the streams' --batch-size")
    parser.add_argument("--model-sizes", default="256,1000,4000",
                        help="call sizes at which the model's own CPU is measured")
    parser.add_argument("--serve-echo", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", metavar="ENDPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="re-render from bench/tmp/limits.json")
    args = parser.parse_args(argv)
    if args.serve_echo:
        return echo_server(args.serve_echo)
    if args.serve_bare:
        return bare_server(args.serve_bare)
    if args.render:
        RESULTS.write_text(render(json.loads(RAW.read_text())))
        return None
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    model_sizes = sorted(set(sizes) | {int(x) for x in args.model_sizes.split(",")})
    texts = load_texts()
    texts_path = write_texts(texts, TMP / "texts.json")
    jsonl = write_jsonl(texts, STREAM_DOCS, TMP / "limits-stream.jsonl")
    raw: dict = {"rounds": args.rounds, "calls": args.calls, "cpus": os.cpu_count(),
                 "host": os.uname().nodename, "load_before": os.getloadavg(),
                 "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with Fleet() as fleet:
        expertd = fleet.expertd("limits-expertd", sentiment_config())
        echo_endpoint = f"tcp://127.0.0.1:{free_port()}"
        echo = fleet.spawn("limits-echo", [PYTHON, "-m", "bench.limits", "--serve-echo",
                                            echo_endpoint], echo_endpoint)
        bare_endpoint = f"tcp://127.0.0.1:{free_port()}"
        bare = fleet.spawn("limits-bare", [PYTHON, "-m", "bench.limits", "--serve-bare",
                                            bare_endpoint], bare_endpoint)
        worker = fleet.worker("limits-model", [PYTHON, "-m", "bench.inprocess", "--texts",
                                               str(texts_path), "--count", str(BATCH_DOCS)])
        fleet.wait_ready([expertd, echo, bare])
        raw["batch"] = batch_section(expertd, echo, bare, worker, texts, args.rounds,
                                     args.calls)
        workers = {size: fleet.worker(f"limits-model-{size}",
                                      [PYTHON, "-m", "bench.inprocess", "--texts",
                                       str(texts_path), "--count", str(size)])
                   for size in model_sizes}
        raw["stream"] = stream_section(expertd, echo, bare, workers, jsonl, sizes,
                                       args.stream_rounds)
    raw["stream"]["essential_us"] = essential_us(jsonl)
    raw["load_after"] = os.getloadavg()
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps(raw, indent=1))
    RESULTS.write_text(render(raw))
    print(f"wrote {RESULTS.relative_to(BENCH.parent)}", file=sys.stderr)
    return None


if __name__ == "__main__":
    main()
