"""Writing stdout: every line read comes out once, in order, as JSON or exactly as it came.

``Output`` keeps the ledger of lines read and not yet written. A line leaves
the ledger only when its output is written, and ``write_through_pending``
writes whatever is left unchanged: that is what every exit path calls, so no
exit (an error, a signal, a bug) loses a line. Writing a chunk's lines and
taking them off the ledger is one step that a signal never splits (a signal
that arrives meanwhile is ``deferred`` until the chunk is out). A write that
fails part way (stdout closed) leaves the chunk on the ledger: the exit path
then tries it again, whole. A stdout that another program made non-blocking
(Node does that to the stdio it shares) is waited for when full, as a blocking
one would be (``PatientWriter``): its EAGAIN neither loses lines nor writes a
part of a chunk twice; so is a non-blocking stderr (``PatientText``), so that no
line's reason is lost either.
"""

from __future__ import annotations

import select
import time
from _collections import deque  # collections' own (its package costs a stage ~1.5 ms)

from expertd import jsonc
from expertd.clients.pipe.reading import Item

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import IO


#: ``value`` as JSON text, as ``dump`` writes it (json's C encoder, without importing json).
encode = jsonc.encoder()


def dump(doc: dict) -> bytes:
    """One line of JSON, non-ASCII kept as it is; ``ValueError`` if it would not be JSON."""
    return encode(doc).encode("utf-8") + b"\n"


def answered_line(item: Item, answered, names: tuple[str, ...]) -> tuple[bytes, bool, dict]:
    """The output line of a document the server answered, whether every expert in ``names``
    gave its opinion, and the experts' errors.

    A document that carries no ``opinions``, ``errors``, ``recomputed`` or ``versions``
    of its own comes out as it came, with the answer's ``opinions`` (and ``errors``,
    ``versions``: which version of a versioned expert made each opinion) appended:
    only the answer is encoded. Any other is merged (``merge``) and encoded again.
    ``answered`` may be the answer's JSON text (bytes: the ``as_json`` option, written by the
    server as ``encode`` writes it): spliced in as it is when it holds no ``errors`` and no
    ``recomputed`` (every expert answered), else decoded and written as any other answer.
    Raises ``ValueError`` (or ``TypeError``) if the line would not be JSON.
    """
    doc = item.doc
    if answered.__class__ is bytes:
        if (doc and b'"errors": ' not in answered and b'"recomputed": ' not in answered
                and "opinions" not in doc and "errors" not in doc and "recomputed" not in doc
                and "versions" not in doc and answered[:1] == b"{"):
            return item.raw.strip()[:-1] + b", " + answered[1:] + b"\n", True, {}
        answered = jsonc.loads(answered.decode("utf-8"))
    if not (isinstance(answered, dict) and doc and "opinions" not in doc
            and "errors" not in doc and "recomputed" not in doc and "recomputed" not in answered
            and "versions" not in doc):
        complete = merge(doc, answered, names)
        errors = doc.get("errors")
        return dump(doc), complete, errors if isinstance(errors, dict) else {}
    parts = [item.raw.strip()[:-1]]  # the object without its closing brace
    opinions = answered.get("opinions")
    errors = answered.get("errors")
    if "opinions" in answered:
        parts += (b', "opinions": ', encode(opinions).encode("utf-8"))
    if "errors" in answered:
        parts += (b', "errors": ', encode(errors).encode("utf-8"))
    if "versions" in answered:
        parts += (b', "versions": ', encode(answered["versions"]).encode("utf-8"))
    parts.append(b"}\n")
    errors = errors if isinstance(errors, dict) else {}
    complete = isinstance(opinions, dict) and all(
        name in opinions and name not in errors for name in names)
    return b"".join(parts), complete, errors


def merge(doc: dict, answered: dict, names: tuple[str, ...]) -> bool:
    """Put the server's ``opinions`` and ``errors`` into ``doc``, keeping its key order, and its
    ``recomputed`` (why an opinion the document carried was not reused) and ``versions``
    (which version made each opinion) if it has them.

    Returns True when every expert in ``names`` gave its opinion.
    """
    if not isinstance(answered, dict):
        return False
    for key in ("opinions", "errors"):
        if key in answered:
            doc[key] = answered[key]
        elif key in doc:
            del doc[key]
    for key in ("recomputed", "versions"):
        if key in answered:
            doc[key] = answered[key]
    opinions = doc.get("opinions") or {}
    return isinstance(opinions, dict) and all(name in opinions for name in names) and not any(
        name in (doc.get("errors") or {}) for name in names)


def as_line(raw: bytes) -> bytes:
    """``raw`` with its newline (the last input line may lack one)."""
    return raw if raw.endswith(b"\n") else raw + b"\n"


class PatientWriter:
    """A binary stream whose writes go out whole: short writes are finished, EAGAIN waited out.

    A buffered stream (``sys.stdout.buffer``) says how much of the data it took
    when the file is full and non-blocking (``BlockingIOError.characters_written``);
    a raw one (``python -u``, ``PYTHONUNBUFFERED``) may take only part of it, or
    nothing (``None``, which only a raw file returns). Either way the rest is offered
    again, once the file can be written, so every byte goes out once, in order, as on
    a blocking file.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        """Write through ``stream`` (e.g. ``sys.stdout.buffer``)."""
        self.stream = stream

    def write(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the file is full."""
        view = memoryview(data)
        while view:
            try:
                written = self.stream.write(view)
            except BlockingIOError as exc:
                written = getattr(exc, "characters_written", 0)
                self._wait()
            if written is None:  # a raw non-blocking file took nothing
                self._wait()
                continue
            view = view[written:]

    def flush(self) -> None:
        """Flush the stream, waiting while the file is full."""
        flush_waiting(self.stream)

    def _wait(self) -> None:
        wait_writable(self.stream)


def wait_writable(stream: IO) -> None:
    """Block until ``stream``'s file can take more (a signal handler may run meanwhile)."""
    select.select([], [stream.fileno()], [])


def flush_waiting(stream: IO) -> None:
    """Flush ``stream``, waiting while its file is full and non-blocking."""
    while True:
        try:
            stream.flush()
            return
        except BlockingIOError:
            wait_writable(stream)


class PatientText:
    """A text stream (stderr) whose writes go out whole: encoded here and written through its
    binary buffer by a ``PatientWriter`` (its own text layer drops what a full
    non-blocking file refuses); a stream with no binary buffer is written as it is."""

    def __init__(self, stream: IO[str]) -> None:
        """Write through ``stream`` (e.g. ``sys.stderr``)."""
        self.stream = stream
        buffer = getattr(stream, "buffer", None)
        self.binary = PatientWriter(buffer) if buffer is not None else None
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> None:
        """Write all of ``text``, waiting while the file is full."""
        if self.binary is None:
            self.stream.write(text)
            return
        flush_waiting(self.stream)  # whatever went through the text layer before goes first
        self.binary.write(text.encode(self.encoding, "backslashreplace"))
        self.binary.flush()

    def flush(self) -> None:
        """Flush the stream, waiting while the file is full."""
        if self.binary is None:
            self.stream.flush()
        else:
            flush_waiting(self.stream)
            self.binary.flush()


class Output:
    """stdout, and the ledger of lines read but not yet written."""

    def __init__(self, stdout: IO[bytes]) -> None:
        """Write to ``stdout`` (waiting when it is a full non-blocking file)."""
        self.out = PatientWriter(stdout)
        self.pending: deque[Item] = deque()
        self.writing = False      # a signal that arrives now waits until the chunk is out
        self.deferred = None      # (signal number) that arrived while writing
        self.raise_deferred = None  # set by the stage: raises the deferred signal
        self.written = 0          # lines written so far

    def holding(self) -> "Holding":
        """A step a signal must not split (taking a line from the reader and putting it on
        the ledger): a signal that would stop the stage at once waits until it is done."""
        return Holding(self)

    def read(self, item: Item) -> Item:
        """Note that ``item`` was read (it now must come out)."""
        self.pending.append(item)
        return item

    def write_chunk(self, lines: list[tuple[Item, bytes | None]]) -> None:
        """Write each ``(item, data)``'s line (``data``, or its raw bytes) in order, in one
        write to stdout (a syscall per chunk, not per 8 KiB), and take them off the ledger;
        a signal that arrives meanwhile waits until all are out."""
        self.writing = True
        try:
            self.out.write(b"".join([item.raw if data is None else data
                                     for item, data in lines]))
            pending = self.pending
            # The chunk's lines went on the ledger one after another: the first is at its head.
            assert not lines or pending[0] is lines[0][0], \
                f"line {lines[0][0].number} written out of order"
            popleft = pending.popleft
            for _ in range(len(lines) - 1):
                popleft()
            if lines:
                last = popleft()
                assert last is lines[-1][0], f"line {last.number} written out of order"
            self.written += len(lines)
        finally:
            self.writing = False
        if self.deferred is not None and self.raise_deferred is not None:
            self.raise_deferred()

    def write_through_pending(self, also: bytes = b"") -> int:
        """Write every line still on the ledger unchanged (byte for byte: a last line that
        came without a newline goes out without one), then ``also``; returns how many."""
        count = len(self.pending)
        self.writing = True
        try:
            while self.pending:
                self.out.write(self.pending[0].raw)
                self.pending.popleft()
                self.written += 1
            if also:
                self.out.write(also)
            self.out.flush()
        finally:
            self.writing = False
        return count

    def flush(self) -> None:
        """Flush stdout."""
        self.out.flush()


class Progress:
    """Count and rate on stderr, at most twice a second, only when asked (a terminal)."""

    def __init__(self, stderr: IO[str], enabled: bool) -> None:
        """Show on ``stderr`` if ``enabled``."""
        self.err, self.enabled = stderr, enabled
        self.count = 0
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, n: int, final: bool = False) -> None:
        """``n`` more documents are out; show the count if it is time to."""
        self.count += n
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < 0.5:
            return
        self._last = now
        rate = self.count / max(now - self.started, 1e-9)
        self.err.write(f"\r{self.count} documents, {rate:,.0f}/s" + ("\n" if final else ""))
        self.err.flush()


class Holding:
    """``Output.holding()``: a context manager (a class, not ``contextlib``'s generator: the
    stage neither imports contextlib nor makes a generator per line)."""

    __slots__ = ("output",)

    def __init__(self, output: Output) -> None:
        """Hold ``output``'s deferred signal while the block runs."""
        self.output = output

    def __enter__(self) -> None:
        self.output.writing = True

    def __exit__(self, exc_type, exc, traceback) -> bool:
        output = self.output
        output.writing = False
        if exc_type is None and output.deferred is not None and output.raise_deferred is not None:
            output.raise_deferred()
        return False
