"""``expertd pipe NAME [NAME ...]``: a pipeline stage that adds opinions to JSON.

Reads one JSON document, or JSON Lines, from stdin and writes each document to
stdout with ``opinions.<NAME>`` added by the warm expertd server. Nothing is
lost: a line that is not a JSON object is written through unchanged (and
reported on stderr with its line number), an expert's failure is left under
``errors.<NAME>``, and if no server answers every document is written through
unchanged (exit 3).

The stage is started once per document in many pipelines, so it imports as
little as it can: no TensorFlow, no server code, not even zerorpc (it talks
through the lean ``clients.wire``).

Exit status: 0 every document got every opinion; 1 some did not; 2 usage
error (including an unknown expert); 3 no server answered.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections import deque
from typing import IO, Iterator


from clients import DEFAULT_ENDPOINT
from clients.wire import CallTimeout, Connection, RemoteError, ServerUnavailable, connect

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: Largest request body the stage builds, well under msgpack's 100 MiB cap on the server.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
#: Largest document the stage sends at all (the server refuses messages over 100 MiB).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: Requests a JSON Lines stream keeps in flight, so the server never waits for us.
IN_FLIGHT = 3
_UNREAD = object()


class PipeOptions:
    """Everything ``expertd pipe`` can be told; the CLI maps onto it one to one."""

    DEFAULTS = {
        "endpoint": DEFAULT_ENDPOINT,
        "mode": "auto",            # "auto", "lines" or "single"
        "timeout": 5.0,            # seconds to keep retrying an unreachable server
        "call_timeout": 60.0,      # seconds to wait for one answer
        "batch_size": 256,         # documents per request for JSON Lines
        "autostart": False,        # start `expertd serve` when no server answers
        "autostart_timeout": 180.0,
        "config": None,            # experts file for --autostart
        "progress": None,          # None: when stderr is a terminal
    }

    def __init__(self, names, **values) -> None:
        """``names`` of the experts, then any of ``DEFAULTS`` by keyword."""
        unknown = set(values) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown pipe options: {', '.join(sorted(unknown))}")
        self.names = tuple(dict.fromkeys(names))
        for key, default in self.DEFAULTS.items():
            setattr(self, key, values.get(key, default))

    def __eq__(self, other) -> bool:
        return isinstance(other, PipeOptions) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"PipeOptions({vars(self)!r})"


#: The fast parser's view of the command line: option -> (field, kind).
#: The click command (``clients.pipe_cli``) declares the same options for
#: --help and error messages; tests check that both parse alike.
FAST_OPTIONS = {
    "--lines": ("mode", "lines"), "--single": ("mode", "single"),
    "--autostart": ("autostart", True),
    "--progress": ("progress", True), "--no-progress": ("progress", False),
    "--endpoint": ("endpoint", str), "--config": ("config", str),
    "--timeout": ("timeout", float), "--call-timeout": ("call_timeout", float),
    "--batch-size": ("batch_size", int),
}


def parse_fast(argv: list[str]) -> PipeOptions | None:
    """Parse the common command lines without click; ``None`` means "ask click".

    Anything unusual (help, an unknown option, a bad value, no names) goes to
    click, which explains it properly.
    """
    names: list[str] = []
    values: dict = {}
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            names.append(arg)
            continue
        if arg == "--":
            names.extend(args)
            break
        key, has_value, inline = arg.partition("=")
        spec = FAST_OPTIONS.get(key)
        if spec is None:
            return None
        field, kind = spec
        if isinstance(kind, type):
            raw = inline if has_value else next(args, None)
            if raw is None:
                return None
            try:
                value = kind(raw)
            except ValueError:
                return None
            if kind is not str and value < (1 if field == "batch_size" else 0):
                return None
            values[field] = value
        elif has_value:
            return None
        else:
            values[field] = kind
    if not names:
        return None
    if "endpoint" not in values and os.environ.get("EXPERTD_ENDPOINT"):
        values["endpoint"] = os.environ["EXPERTD_ENDPOINT"]
    return PipeOptions(names, **values)


def retryable(exc: Exception) -> bool:
    """A lost connection, or a server that is draining: worth asking again."""
    return isinstance(exc, ServerUnavailable) or (
        isinstance(exc, RemoteError) and exc.name == "ShuttingDown")


class UsageError(Exception):
    """The server says the request itself is wrong (e.g. an unknown expert)."""


class Unreachable(Exception):
    """No server answered before the deadline."""


# -- reading stdin -------------------------------------------------------------

class LineReader:
    """Lines of a file descriptor, and whether more are ready without blocking."""

    def __init__(self, fd: int) -> None:
        """Read from ``fd`` (stdin's)."""
        self.fd = fd
        self.buf = bytearray()
        self.eof = False

    def _read(self) -> None:
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.eof = True
        else:
            self.buf += chunk

    def ready(self) -> bool:
        """True if a whole line (or end of input) is available without blocking."""
        if b"\n" in self.buf or self.eof:
            return True
        try:
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return True
        if readable:
            self._read()
        return b"\n" in self.buf or self.eof

    def readline(self) -> bytes | None:
        """The next line with its newline (the last may lack one); ``None`` at the end."""
        while b"\n" not in self.buf and not self.eof:
            self._read()
        if not self.buf:
            return None
        end = self.buf.find(b"\n")
        end = len(self.buf) if end < 0 else end + 1
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line

    def rest(self) -> Iterator[bytes]:
        """Everything not yet returned, in blocks."""
        if self.buf:
            yield bytes(self.buf)
            self.buf.clear()
        while not self.eof:
            self._read()
            if self.buf:
                yield bytes(self.buf)
                self.buf.clear()


# -- documents -----------------------------------------------------------------

class Item:
    """One input line: its raw bytes and, if it is a JSON object, the document."""

    __slots__ = ("number", "raw", "doc", "problem")

    def __init__(self, number: int, raw: bytes, doc: dict | None = None,
                 problem: str | None = None) -> None:
        """Line ``number`` (from 1), as read; ``doc`` if it parsed to an object."""
        self.number, self.raw, self.doc, self.problem = number, raw, doc, problem


def parse_line(number: int, raw: bytes) -> Item:
    """Parse one line; a line that is not a JSON object keeps a ``problem``."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        return Item(number, raw, problem=f"document is {len(raw)} bytes, over the "
                                         f"{MAX_DOCUMENT_BYTES} a stage sends")
    text = raw.strip()
    if not text:
        return Item(number, raw)
    try:
        value = json.loads(text)
    except ValueError as exc:
        return Item(number, raw, problem=f"not valid JSON ({exc})")
    if not isinstance(value, dict):
        return Item(number, raw, problem=f"not a JSON object (got {type(value).__name__})")
    return Item(number, raw, doc=value)


def merge(doc: dict, answered: dict, names: tuple[str, ...]) -> bool:
    """Put the server's ``opinions`` and ``errors`` into ``doc``, keeping its key order.

    Returns True when every expert in ``names`` gave its opinion.
    """
    if not isinstance(answered, dict):
        return False
    for key in ("opinions", "errors"):
        if key in answered:
            doc[key] = answered[key]
        elif key in doc:
            del doc[key]
    opinions = doc.get("opinions") or {}
    return all(name in opinions for name in names) and not any(
        name in (doc.get("errors") or {}) for name in names)


def dump(doc: dict) -> bytes:
    """One line of JSON, non-ASCII kept as it is."""
    return json.dumps(doc, ensure_ascii=False, separators=(", ", ": ")).encode("utf-8") + b"\n"


# -- the stage -----------------------------------------------------------------

class Stage:
    """Runs one invocation of the pipe stage."""

    def __init__(self, options: PipeOptions, stdin_fd: int, stdout: IO[bytes],
                 stderr: IO[str]) -> None:
        """Read documents from ``stdin_fd``, write them to ``stdout``, talk on ``stderr``."""
        self.options = options
        self.reader = LineReader(stdin_fd)
        self.out = stdout
        self.err = stderr
        self.connection: Connection | None = None
        self.incomplete = 0
        self.count = 0
        self.started = time.monotonic()
        self.progress = options.progress if options.progress is not None else stderr.isatty()
        self._last_progress = 0.0

    def warn(self, message: str) -> None:
        """One line on stderr, prefixed with the command name."""
        self.err.write(f"expertd pipe: {message}\n")
        self.err.flush()

    # -- connecting --

    def connect(self) -> Connection:
        """A connection, retrying with backoff until ``--timeout`` (and autostarting)."""
        if self.connection is not None:
            return self.connection
        opts = self.options
        deadline = time.monotonic() + opts.timeout
        delay, started_server, last_error = 0.05, False, None
        while True:
            try:
                self.connection = connect(opts.endpoint, timeout=opts.call_timeout)
                if started_server:
                    self.connection.call("health", timeout=5.0)
                return self.connection
            except (ServerUnavailable, CallTimeout) as exc:
                last_error = exc
                self.connection = None
            if opts.autostart and not started_server:
                self.start_server()
                started_server = True
                deadline = time.monotonic() + opts.autostart_timeout
            if time.monotonic() + delay > deadline:
                raise Unreachable(self.unreachable_message(last_error))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def unreachable_message(self, error: Exception | None) -> str:
        """Say which endpoint was tried and how to start a server."""
        waited = self.options.autostart_timeout if self.options.autostart else self.options.timeout
        return (f"no expertd server answered at {self.options.endpoint} within {waited:g} s "
                f"({error}). Start one with `expertd serve --bind {self.options.endpoint}` "
                f"(or `make run`), or pass --autostart. "
                f"Documents were written through unchanged.")

    def start_server(self) -> None:
        """Start ``expertd serve`` in the background, detached from this stage."""
        import subprocess

        log_dir = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        log_path = os.path.join(log_dir, "expertd", "server.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        command = [os.path.join(os.path.dirname(sys.executable), "expertd"), "serve",
                   "--bind", self.options.endpoint]
        if self.options.config:
            command += ["--config", self.options.config]
        with open(log_path, "ab") as log:
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True, close_fds=True)
        self.warn(f"no server at {self.options.endpoint}: started `{' '.join(command)}` "
                  f"(log: {log_path}); waiting for it to load its experts")

    def call(self, method: str, *args):
        """One call; if the server is lost or draining, reconnect and retry within ``--timeout``."""
        deadline = time.monotonic() + self.options.timeout
        while True:
            connection = self.connect()
            try:
                return connection.call(method, *args)
            except CallTimeout:
                raise Unreachable(self.call_timeout_message()) from None
            except (ServerUnavailable, RemoteError) as exc:
                if not retryable(exc):
                    raise
                self.drop(connection)
                if time.monotonic() > deadline:
                    raise Unreachable(self.unreachable_message(exc)) from None
                time.sleep(0.1)

    def drop(self, connection: Connection) -> None:
        """Forget a connection that broke (the next call makes a new one)."""
        connection.close()
        if self.connection is connection:
            self.connection = None

    def call_timeout_message(self) -> str:
        """Say that the server took longer than ``--call-timeout``."""
        return (f"{self.options.endpoint} did not answer within --call-timeout "
                f"{self.options.call_timeout:g} s; documents not yet answered were "
                f"written through unchanged")

    # -- running --

    def run(self) -> int:
        """Process all of stdin; return the exit status."""
        try:
            if self.options.mode == "single":
                return self.run_single(self.reader.readline() or b"")
            first = self.reader.readline()
            if first is None:
                return EXIT_OK
            if self.options.mode == "lines":
                return self.run_lines(first)
            # A first line that is a whole JSON value means JSON Lines; otherwise
            # one document (which falls back to lines if it does not parse whole).
            item = parse_line(1, first)
            if item.doc is not None or (item.problem or "").startswith(
                    ("not a JSON object", "document is")):
                return self.run_lines(first)
            return self.run_single(first)
        except Unreachable as exc:
            self.warn(str(exc))
            return EXIT_UNREACHABLE
        except UsageError as exc:
            self.warn(str(exc))
            return EXIT_USAGE
        finally:
            self.out.flush()
            if self.connection is not None:
                self.connection.close()

    def run_single(self, first: bytes) -> int:
        """One document that may span many lines (pretty-printed JSON)."""
        raw = first + b"".join(self.reader.rest())
        if len(raw) > MAX_DOCUMENT_BYTES:
            self.out.write(raw)
            self.warn(f"document is {len(raw)} bytes, over the {MAX_DOCUMENT_BYTES} a stage "
                      f"sends; written through unchanged")
            return EXIT_PARTIAL
        try:
            value = json.loads(raw)
        except ValueError as exc:
            if raw.count(b"\n") > 1 and self.options.mode == "auto":
                return self.run_lines_from(raw)
            self.out.write(raw)
            self.warn(f"line 1: not valid JSON ({exc}); written through unchanged")
            return EXIT_PARTIAL
        if not isinstance(value, dict):
            self.out.write(raw)
            self.warn(f"input is not a JSON object (got {type(value).__name__}); "
                      f"written through unchanged")
            return EXIT_PARTIAL
        try:
            answered = self.call("opinions", value, list(self.options.names))
        except Unreachable:
            self.out.write(raw)
            raise
        except RemoteError as exc:
            self.out.write(raw)
            raise UsageError(f"{exc.name}: {exc.msg}") from None
        complete = merge(value, answered, self.options.names)
        self.out.write(dump(value))
        self.report_errors(1, value)
        return EXIT_OK if complete else EXIT_PARTIAL

    def run_lines_from(self, raw: bytes) -> int:
        """JSON Lines from an already-read block (auto-detection fell back to lines)."""
        lines = raw.splitlines(keepends=True)
        self.reader.buf[:0] = b"".join(lines[1:])
        return self.run_lines(lines[0])

    def run_lines(self, first: bytes) -> int:
        """JSON Lines: batches in flight while more input is read, output in input order.

        A chunk is sent when it is full or when the input pauses, so a slow
        producer's documents come out as they go in.
        """
        in_flight: deque = deque()  # (connection, message id, items), oldest first
        number = 0
        upcoming: bytes | None | object = first
        while True:
            chunk: list[Item] = []
            size = 0
            while len(chunk) < self.options.batch_size and size < MAX_CHUNK_BYTES:
                if upcoming is _UNREAD:
                    if chunk and not self.reader.ready():
                        break  # the input paused: answer what we have now
                    upcoming = self.reader.readline()
                if upcoming is None:
                    break
                number += 1
                chunk.append(parse_line(number, upcoming))
                size += len(upcoming)
                upcoming = _UNREAD
            if chunk:
                in_flight.append((*self.send(chunk, in_flight), chunk))
            while in_flight and (len(in_flight) >= IN_FLIGHT or upcoming is None
                                 or not self.reader.ready()):
                connection, message_id, items = in_flight.popleft()
                self.finish(connection, message_id, items, in_flight)
            if upcoming is None and not in_flight:
                break
        self.show_progress(final=True)
        return EXIT_PARTIAL if self.incomplete else EXIT_OK

    def send(self, chunk: list[Item], in_flight: deque) -> tuple:
        """Send the documents of a chunk without waiting: ``(connection, id)``, or ``None``s."""
        docs = [item.doc for item in chunk if item.doc is not None]
        if not docs:
            return None, None
        try:
            connection = self.connect()
            try:
                return connection, connection.send("opinions_batch", docs,
                                                   list(self.options.names))
            except ServerUnavailable:
                self.drop(connection)
                return None, None  # ``finish`` asks again on a new connection
        except Unreachable:
            self.write_through([c for _, _, c in in_flight] + [chunk])
            in_flight.clear()
            raise

    def finish(self, connection: Connection | None, message_id: str | None,
               items: list[Item], in_flight: deque) -> None:
        """Wait for a chunk's answer and write its lines, in order."""
        docs = [item.doc for item in items if item.doc is not None]
        answers: list = []
        try:
            if docs:
                answers = self.answer(connection, message_id, docs)
        except (Unreachable, UsageError):
            self.write_through([items] + [chunk for _, _, chunk in in_flight])
            in_flight.clear()
            raise
        answers_iter = iter(answers)
        for item in items:
            if item.doc is None:
                self.out.write(item.raw if item.raw.endswith(b"\n") else item.raw + b"\n")
                if item.problem:
                    self.incomplete += 1
                    self.warn(f"line {item.number}: {item.problem}; written through unchanged")
                continue
            complete = merge(item.doc, next(answers_iter), self.options.names)
            if not complete:
                self.incomplete += 1
                self.report_errors(item.number, item.doc)
            self.out.write(dump(item.doc))
        self.count += len(items)
        self.out.flush()
        self.show_progress()

    def answer(self, connection: Connection | None, message_id: str | None,
               docs: list[dict]) -> list:
        """The reply to a sent chunk; asked again if its connection broke meanwhile."""
        if connection is not None and connection is self.connection:
            try:
                return connection.receive(message_id)
            except CallTimeout:
                raise Unreachable(self.call_timeout_message()) from None
            except (ServerUnavailable, RemoteError) as exc:
                if not retryable(exc):
                    raise UsageError(f"{exc.name}: {exc.msg}") from None
                self.drop(connection)
        try:
            return self.call("opinions_batch", docs, list(self.options.names))
        except RemoteError as exc:
            raise UsageError(f"{exc.name}: {exc.msg}") from None

    def write_through(self, chunks: list[list[Item]]) -> None:
        """Write unanswered lines, and the rest of stdin, through unchanged."""
        for chunk in chunks:
            for item in chunk:
                self.out.write(item.raw if item.raw.endswith(b"\n") else item.raw + b"\n")
        for block in self.reader.rest():
            self.out.write(block)
        self.out.flush()

    def report_errors(self, number: int, doc: dict) -> None:
        """Name, on stderr, each expert that gave no opinion for a document."""
        for name, error in (doc.get("errors") or {}).items():
            if name in self.options.names or not self.options.names:
                message = error.get("message") if isinstance(error, dict) else error
                kind = error.get("name") if isinstance(error, dict) else "Error"
                self.warn(f"line {number}: {name}: {kind}: {message}")

    def show_progress(self, final: bool = False) -> None:
        """Count and rate on stderr, at most twice a second, only on a terminal."""
        if not self.progress:
            return
        now = time.monotonic()
        if not final and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        rate = self.count / max(now - self.started, 1e-9)
        self.err.write(f"\r{self.count} documents, {rate:,.0f}/s" + ("\n" if final else ""))
        self.err.flush()


def run(options: PipeOptions, stdin_fd: int | None = None, stdout: IO[bytes] | None = None,
        stderr: IO[str] | None = None) -> int:
    """Run the stage on stdin/stdout (or the given streams); return the exit status."""
    stage = Stage(options, sys.stdin.fileno() if stdin_fd is None else stdin_fd,
                  stdout or sys.stdout.buffer, stderr or sys.stderr)
    try:
        return stage.run()
    except BrokenPipeError:
        # The next stage went away; that is its business, not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# -- command line ---------------------------------------------------------------

def main(argv: list[str] | None = None, prog_name: str = "expertd-pipe") -> None:
    """Entry point of ``expertd pipe``, ``expertd-pipe`` and ``expert_<name>`` stages.

    The common command lines are parsed without importing click (which costs
    a stage more than its whole run); anything else goes to the click command.
    """
    argv = sys.argv[1:] if argv is None else argv
    options = parse_fast(argv)
    if options is None:
        from clients.pipe_cli import pipe

        pipe.main(args=argv, prog_name=prog_name)
        return
    sys.exit(run(options))


if __name__ == "__main__":
    main()
