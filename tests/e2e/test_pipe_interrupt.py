"""Ctrl-C, SIGTERM and a closed downstream in the middle of a stream lose nothing (issue #23).

Each run is a real pipeline: ``cat`` of a JSON Lines file of numbered documents
into one or two ``expertd pipe vader`` stages, every process in one process
group (as a shell starts it), against a real server; then a signal goes to
the group, as a terminal's Ctrl-C sends it, at a random moment.

What "consumed" means: the test holds its own read end of every pipe between
two processes, and once a pipe's reader has exited it drains what is left in
it. So for each stage, the bytes it read are exactly the bytes its writer put
in the pipe minus those left there. The checks:

- no stage leaves anything unread in the pipe from the process before it (after
  Ctrl-C a stage reads its pipe to the end: the process before it wrote those
  lines, and an upstream stage counts them as written);
- the last stage's output, line by line, is documents 0, 1, 2 ... in order,
  none skipped or repeated, each line valid JSON with the input's id and text,
  or the exact bytes of its input line;
- what the first stage left unread in its pipe continues the input exactly
  where the lines that came out of it end (no line it read went missing);
- a last line that came without its newline is written back byte for byte,
  without an added one, and the stage names it on stderr;
- every stage says on stderr that it was stopped, and exits 128 + the signal
  (141 when the next stage closed its stdin).

Seeded: a failure names the seed and the run, to replay it.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import EXPERTD, ServerProcess, free_port, wait_for

VADER_CONFIG = Path(__file__).resolve().parents[1] / "vader_experts.yaml"
DOCUMENTS = 100_000
SEED = int(os.environ.get("PIPE_INTERRUPT_SEED", random.SystemRandom().randrange(1 << 32)))


@pytest.fixture(scope="module")
def vader_server(tmp_path_factory):
    """A server of the fast ``vader`` expert (no TensorFlow)."""
    proc = ServerProcess(VADER_CONFIG, tmp_path_factory.mktemp("vader"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> tuple[Path, list[bytes]]:
    """A JSON Lines file of numbered documents, and its lines (each with its newline)."""
    path = tmp_path_factory.mktemp("input") / "numbered.jsonl"
    lines = [(json.dumps({"id": i, "text": f"document {i}: I love this, it is great"}) + "\n")
             .encode() for i in range(DOCUMENTS)]
    path.write_bytes(b"".join(lines))
    return path, lines


class Run:
    """One pipeline ``cat FILE | stage [| stage] [| head -c N] > out``, in its own process group."""

    def __init__(self, input_path: Path, stages: int, endpoint: str, tmp: Path,
                 head_bytes: int | None = None) -> None:
        """Start it; ``head_bytes`` puts ``head -c`` last (it closes its stdin: EPIPE; then no
        pipe is held open by the test, so that its writer sees the pipe closed)."""
        keep = head_bytes is None
        self.tmp = tmp
        self.out_path = tmp / "out"
        self.err_paths = [tmp / f"stage{k}.err" for k in range(stages)]
        env = dict(os.environ, EXPERTD_ENDPOINT=endpoint)
        commands = [["cat", str(input_path)]]
        commands += [[EXPERTD, "pipe", "vader"] for _ in range(stages)]
        if head_bytes is not None:
            commands.append(["head", "-c", str(head_bytes)])
        self.kept: list[int] = []  # our read end of each pipe, between process k and k+1
        self.processes: list[subprocess.Popen] = []
        stdin = subprocess.DEVNULL
        out = open(self.out_path, "wb")
        for k, command in enumerate(commands):
            last = k == len(commands) - 1
            if not last:
                read_end, write_end = os.pipe()
                if keep:
                    kept = os.dup(read_end)
                    os.set_blocking(kept, False)
                    self.kept.append(kept)
            stderr = open(self.err_paths[k - 1], "wb") if 1 <= k <= stages else None
            process = subprocess.Popen(
                command, stdin=stdin, stdout=out if last else write_end, stderr=stderr, env=env,
                process_group=0 if k == 0 else self.processes[0].pid)
            self.processes.append(process)
            if stderr is not None:
                stderr.close()
            if stdin is not subprocess.DEVNULL:
                os.close(stdin)
            if not last:
                os.close(write_end)
                stdin = read_end
        out.close()
        self.pgid = self.processes[0].pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole group, as a terminal does on Ctrl-C."""
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass

    def finish(self, timeout: float = 60.0) -> list[bytes]:
        """Wait for every process; return what was left unread in each pipe.

        A pipe is drained only once its reader has exited (draining earlier would
        take the reader's input), and then until its writer has exited.
        """
        left = [bytearray() for _ in self.kept]
        deadline = time.monotonic() + timeout
        while True:
            done = [p.poll() is not None for p in self.processes]
            for k, fd in enumerate(self.kept):
                if done[k + 1]:  # the pipe's reader is gone: what remains was never read
                    while select.select([fd], [], [], 0)[0]:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        left[k] += chunk
            if all(done):
                break
            if time.monotonic() > deadline:
                for p in self.processes:
                    p.kill()
                raise AssertionError("the pipeline did not finish within "
                                     f"{timeout} s after the signal")
            time.sleep(0.01)
        for fd in self.kept:
            os.close(fd)
        return [bytes(b) for b in left]

    def stage_status(self, k: int) -> int:
        """Exit status of stage ``k`` (0-based), as a shell reports it."""
        return self.processes[k + 1].returncode

    def stage_err(self, k: int) -> str:
        """What stage ``k`` said on stderr."""
        return self.err_paths[k].read_text(errors="replace")


def check_lines(stream: bytes, lines: list[bytes], context: str) -> tuple[int, bytes]:
    """``stream`` must be documents 0, 1, 2 ... in order, each line valid JSON with its
    document's id and text, or its input line's exact bytes; only the last may lack its
    newline, and must then be the start of that document's line (as read, or answered).

    Returns the number of whole lines and the partial last line (``b""`` if none).
    """
    *whole, partial = stream.split(b"\n")
    for i, line in enumerate(whole):
        assert i < len(lines), f"{context}: more lines out than in"
        if line + b"\n" == lines[i]:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"{context}: output line {i} is neither JSON nor input line "
                                 f"{i} as it came: {line[:200]!r}") from None
        expected = json.loads(lines[i])
        assert isinstance(doc, dict) and doc.get("id") == expected["id"] and \
            doc.get("text") == expected["text"], (
                f"{context}: output line {i} should be document {i} (a line lost, repeated or "
                f"out of order): {line[:200]!r}")
        assert "opinions" in doc, f"{context}: output line {i} is JSON but not as it came " \
                                  f"and has no opinions: {line[:200]!r}"
    if partial:
        i = len(whole)
        original = lines[i]
        assert original.startswith(partial) or partial.startswith(original[:-2]), (
            f"{context}: the partial last line is not the start of document {i}: {partial[:200]!r}")
    return len(whole), partial


def check_continues(lines: list[bytes], taken: int, partial: bytes, left: bytes,
                    answered_whole_last: bool, context: str) -> None:
    """The input left unread by the first stage must start right where its output ends."""
    data = b"".join(lines)
    covered = b"".join(lines[:taken]) + partial
    if data.startswith(covered + left):
        return
    # A last line that came without its newline, yet was a whole document: it was answered
    # (with a newline, as every answered line), and the newline is what the stage left unread.
    assert answered_whole_last and data.startswith(covered[:-1] + left), (
        f"{context}: lines the first stage read are missing: its output covers "
        f"{len(covered)} bytes of the input ({taken} lines), but what it left unread starts "
        f"at {data.find(left[:200]) if left else 'the end'}: {left[:120]!r}")


def assert_stopped(run: Run, k: int, signum: int, context: str) -> None:
    """Stage ``k`` said it was stopped, and exited 128 + ``signum``."""
    err = run.stage_err(k)
    status = run.stage_status(k)
    if signum == signal.SIGPIPE:
        assert "stdout was closed" in err, f"{context}: stage {k} did not say so: {err!r}"
    else:
        assert f"stopped by {signal.Signals(signum).name}" in err, (
            f"{context}: stage {k} did not say it was stopped: {err!r}")
    assert status == 128 + signum, (
        f"{context}: stage {k} exited {status}, not {128 + signum}; stderr: {err[-2000:]!r}")


def test_interrupts_lose_nothing(vader_server, numbered, tmp_path):
    """At least 20 interrupts at random moments, single and two-stage, SIGINT, SIGTERM, EPIPE."""
    input_path, lines = numbered
    rng = random.Random(SEED)
    plans = ([(1, signal.SIGINT)] * 6 + [(1, signal.SIGTERM)] * 3 + [(2, signal.SIGINT)] * 6
             + [(2, signal.SIGTERM)] * 3 + [(1, signal.SIGPIPE)] * 2 + [(2, signal.SIGPIPE)] * 2)
    rng.shuffle(plans)
    for number, (stages, signum) in enumerate(plans):
        context = (f"seed {SEED} (PIPE_INTERRUPT_SEED={SEED} replays it), run {number}: "
                   f"{stages} stage(s), {signal.Signals(signum).name}")
        tmp = tmp_path / f"run{number}"
        tmp.mkdir()
        if signum == signal.SIGPIPE:
            head = rng.randrange(1_000, 2_000_000)
            run = Run(input_path, stages, vader_server.endpoint, tmp, head_bytes=head)
            run.finish()
            out = run.out_path.read_bytes()
            assert len(out) == head, f"{context}: head got {len(out)} bytes of {head}"
            check_lines(out, lines, context)
            for k in range(stages):
                assert_stopped(run, k, signum, context)
            continue
        run = Run(input_path, stages, vader_server.endpoint, tmp)
        # Once output flows every stage has set its handlers (a signal while Python starts
        # is not the stage's to handle): then a random moment mid-stream.
        wait_for(lambda out=run.out_path: out.stat().st_size > 0, timeout=60, what="first output")
        time.sleep(rng.uniform(0.0, 1.0))
        run.signal(signum)
        left = run.finish()
        out = run.out_path.read_bytes()
        # Every stage read its pipe to the end: what an upstream stage (or cat) wrote into
        # a pipe before the signal is read and comes out, nothing is left in any pipe.
        for k, unread in enumerate(left):  # left[k]: the pipe stage k reads
            writer = "cat" if k == 0 else f"stage {k - 1}"
            newlines = unread.count(b"\n")
            assert not unread, (
                f"{context}: stage {k} left {newlines} line(s) that {writer} wrote unread in "
                f"its pipe (lost): {unread[:120]!r}; stderr: {run.stage_err(k)[-600:]!r}")
        stream = out
        taken, partial = check_lines(stream, lines, context)
        assert taken < DOCUMENTS, f"{context}: the signal came after the whole input"
        out_partial = out.rsplit(b"\n", 1)[-1]
        if out_partial:
            err = run.stage_err(stages - 1)
            assert ("the input ended inside this line" in err
                    or "the stage was stopped while reading this line" in err), (
                f"{context}: the partial last line {out_partial[:80]!r} was not named on stderr")
        answered_whole_last = bool(partial) is False and taken > 0 and \
            stream[:-1].rsplit(b"\n", 1)[-1] + b"\n" != lines[taken - 1]
        check_continues(lines, taken, partial, left[0], answered_whole_last, context)
        for k in range(stages):
            assert_stopped(run, k, signum, context)


def test_ctrl_c_while_no_server_answers_ends_the_wait(tmp_path):
    # The stage retries a server that is not there for up to --timeout (120 s); Ctrl-C
    # ends that wait: every line read, the cut-off last one too, comes out as it came.
    data = b'{"id": 0, "text": "a"}\n{"id": 1, "text": "b"}\n{"id": 2, "te'
    later = b'xt": "c"}\n{"id": 3, "text": "d"}\n{"id": 4, "te'
    proc = subprocess.Popen([EXPERTD, "pipe", "--timeout", "120", "vader"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, EXPERTD_ENDPOINT=f"tcp://127.0.0.1:{free_port()}"))
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
        time.sleep(1.0)  # reading and retrying the connection (sooner or later: the same result)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        # What its writer still sends comes out too: the stage reads its pipe to the end.
        out, err = proc.communicate(later, timeout=60)  # well before --timeout: the signal ended it
    finally:
        proc.kill()
    err = err.decode()
    assert out == data + later, (out, err)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "stopped by SIGINT" in err and "the input ended inside this line" in err, err
    assert "Traceback" not in err


def test_a_pipe_held_open_after_one_signal_and_a_second_signal(vader_server):
    # A stage reads its pipe on after Ctrl-C: what its writer still sends comes out. A writer
    # that was not stopped and keeps the pipe open: a second signal stops the stage at once
    # (within the 5 s it would otherwise wait for the writer to go quiet).
    proc = subprocess.Popen([EXPERTD, "pipe", "vader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, EXPERTD_ENDPOINT=vader_server.endpoint))
    try:
        proc.stdin.write(b'{"id": 0, "text": "good"}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 0  # handlers are set by now
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b'{"id": 1, "text": "sent after the signal"}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1  # read and written out
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the stage stopped reading at the second signal ...
        try:  # ... so what comes after it is never read (well within the 5 s quiet wait)
            proc.stdin.write(b'{"id": 2, "text": "after the second signal"}\n')
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        wait_for(lambda: proc.poll() is not None, timeout=30, what="the stage to stop")
        assert b'"id": 2' not in proc.stdout.read()
    finally:
        proc.kill()
    err = proc.stderr.read().decode()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "signalled twice" in err, err
