"""``expertd learn NAME``: teach an expert from labelled JSON Lines on stdin.

Each line is a document with the expert's input field and its target field
(``{"text": "...", "label": "..."}``). Lines are sent in batches through
``learn(NAME, docs)``, in order, one call at a time, so the server's log keeps
the stream's order; a batch also goes out whenever the input pauses, so a slow
producer's examples are learned at once. Every line is accounted for: a line
that is not JSON, or that the server refuses, is reported on stderr with its
line number and reason; the summary (accepted, refused, the expert's new
state) is one JSON object on stdout.

A learner behind its ``max_backlog`` (``LearnBacklogFull``: nothing of the
batch was stored) is waited for: the batch is sent again, with growing
pauses, for up to ``--call-timeout`` seconds. A batch refused whole
(``LearnLimit``, or a learner still full) is named on stderr, lines and all.

Exit status: 0 every line learned; 1 some refused; 2 usage error (unknown
expert, an expert that does not learn, a batch beyond the learner's limits);
3 no server answered, or the learner stayed full (the lines not acknowledged
are named on stderr: they were not learned, or it is unknown).
"""

from __future__ import annotations

import json
import re
import sys
import time

import click

from expertd.clients.pipe import LineReader
from expertd.clients.pipe.reading import decode, pack_document, problem_of
from expertd.clients.wire import CallTimeout, RemoteError, ServerUnavailable, connect
from expertd.options import endpoint_option
from expertd.spec import ERROR, METHOD, exit_code

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
_WHERE = re.compile(r"^docs\[\d+\]")


class Teacher:
    """Sends labelled lines to one expert and keeps the account of every line."""

    def __init__(self, name: str, endpoint: str, timeout: float, call_timeout: float,
                 batch_size: int) -> None:
        """Nothing is connected until the first batch."""
        self.name, self.endpoint = name, endpoint
        self.timeout, self.call_timeout, self.batch_size = timeout, call_timeout, batch_size
        self.connection = None
        self.accepted = 0
        self.refused: list[int] = []
        self.state: dict | None = None

    def refuse(self, line: int, reason: str) -> None:
        """Report one line that was not learned."""
        self.refused.append(line)
        click.echo(f"expertd learn: line {line}: {reason}", err=True)

    def _connect(self):
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return connect(self.endpoint, timeout=self.call_timeout)
            except ServerUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def send(self, batch: list[tuple[int, object]]) -> None:
        """Teach one batch of ``(line number, document)``; raises on a lost server."""
        if self.connection is None:
            self.connection = self._connect()
        deadline = time.monotonic() + self.timeout
        full_until = time.monotonic() + self.call_timeout
        pause = 0.2
        while True:
            try:
                result = self.connection.call(METHOD.learn, self.name, [doc for _, doc in batch])
                break
            except RemoteError as exc:
                if exc.name == ERROR.LearnBacklogFull and time.monotonic() < full_until:
                    time.sleep(pause)  # the learner is behind and stored nothing: wait for it
                    pause = min(pause * 2, 5.0)
                    continue
                if exc.name != ERROR.ShuttingDown or time.monotonic() >= deadline:
                    raise  # a draining server took nothing: ask again, elsewhere
                self.connection.close()
                time.sleep(0.2)
                self.connection = self._connect()
        self.accepted += result["accepted"]
        self.state = result["state"]
        for refusal in result["refused"]:
            line = batch[refusal["index"]][0]
            self.refuse(line, f"{refusal['name']}: {_WHERE.sub(f'line {line}', refusal['message'])}")

    def close(self) -> None:
        """Close the connection."""
        if self.connection is not None:
            self.connection.close()


def run(name: str, endpoint: str, timeout: float, call_timeout: float, batch_size: int,
        stdin_fd: int | None = None) -> int:
    """Teach ``name`` from stdin; return the exit status."""
    reader = LineReader(sys.stdin.fileno() if stdin_fd is None else stdin_fd)
    teacher = Teacher(name, endpoint, timeout, call_timeout, batch_size)
    batch: list[tuple[int, object]] = []
    number = 0
    status = EXIT_OK
    try:
        while True:
            if batch and (len(batch) >= batch_size or not reader.ready()):
                teacher.send(batch)  # a full batch, or the input paused
                batch = []
            raw = reader.readline()
            if raw is None:
                break
            number += 1
            if not raw.strip():
                continue
            try:  # the pipe stage's own reading: what msgpack cannot carry is refused here
                value = decode(raw.strip())
            except (ValueError, RecursionError) as exc:
                teacher.refuse(number, problem_of(exc))
                continue
            try:
                pack_document(value)
            except ValueError as exc:
                teacher.refuse(number, f"cannot be sent: {exc}")
                continue
            batch.append((number, value))
        if batch:
            teacher.send(batch)
            batch = []
    except (ServerUnavailable, CallTimeout) as exc:
        lines = [n for n, _ in batch]
        click.echo(f"expertd learn: {exc}", err=True)
        if lines:
            click.echo(f"expertd learn: lines {lines[0]}-{lines[-1]} were not acknowledged "
                       f"(not learned, or unknown); lines after {number} were not read", err=True)
        status = EXIT_UNREACHABLE
    except RemoteError as exc:
        click.echo(f"expertd learn: {exc.name}: {exc.msg}", err=True)
        lines = [n for n, _ in batch]
        if lines and exc.name in (ERROR.LearnLimit, ERROR.LearnBacklogFull):
            click.echo(f"expertd learn: lines {lines[0]}-{lines[-1]} were not learned (nothing of "
                       f"them was stored); lines after {number} were not read", err=True)
        status = exit_code(exc.name) or EXIT_USAGE
    finally:
        teacher.close()
    summary = {"expert": name, "lines": number, "accepted": teacher.accepted,
               "refused": len(teacher.refused), "refused_lines": teacher.refused,
               "state": teacher.state}
    click.echo(json.dumps(summary, ensure_ascii=False))
    if status == EXIT_OK and teacher.refused:
        status = EXIT_PARTIAL
    return status


@click.command("learn", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@endpoint_option()
@click.option("--timeout", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds to keep retrying an unreachable server before giving up (exit 3).")
@click.option("--call-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds to wait for one batch to be acknowledged.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Lines per learn call (fewer when the input pauses).")
def learn(name, endpoint, timeout, call_timeout, batch_size):
    """Teach expert NAME from labelled JSON Lines on stdin.

    \b
      echo '{"text": "refund my order", "label": "billing"}' | expertd learn learner
      expertd learn learner < labelled.jsonl

    Exit status: 0 every line learned; 1 some refused (stderr names them);
    2 usage error; 3 no server answered.
    """
    sys.exit(run(name, endpoint, timeout, call_timeout, batch_size))
