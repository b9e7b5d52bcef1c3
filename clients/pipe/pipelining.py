"""Pipelining JSON Lines: chunks in flight while more input is read, answers in input order.

A chunk is sent when it is full or when the input pauses, so a slow
producer's documents come out as they go in. Chunks in flight are spread
over the stage's connections (``Connector.spare``: the least busy one, a new
one while fewer than ``--connections`` are open), and answers are still
written in input order; a chunk whose connection broke is asked again.

When the server refuses a whole chunk (not one of its documents), one empty
call with the same experts tells whether the request itself is wrong (an
unknown expert: the stream stops) or one of its documents is; then the chunk is split in halves until the
documents the server refuses are found, and every other one is answered. A
request on which the server drops a fresh connection twice (a message over
its size cap) is split the same way.
"""

from __future__ import annotations

import select
import time
from _collections import deque  # collections' own (its package costs a stage ~1.5 ms)

from expertd.clients import lean_msgpack as msgpack  # msgpack's bytes, without importing it
from expertd.clients.pipe.output import answered_line
from expertd.clients.pipe.reading import Item, parse_lines
from expertd.clients.pipe.retrying import Backoff, describe, retryable, stop_for
from expertd.clients.calls import WaitInterrupted
from expertd.clients.wire import CallTimeout, Connection, RemoteError, ServerUnavailable, pack_array
from expertd.spec import ERROR, METHOD

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import Iterable, Protocol

    from expertd.clients.pipe.connecting import Connector
    from expertd.clients.pipe.options import PipeOptions
    from expertd.clients.pipe.output import Output, Progress
    from expertd.clients.pipe.reading import LineReader
else:
    Protocol = object  # StageLike is an interface for type checkers; at run time a plain class



def signal_name(signum: int) -> str:
    """``SIGINT`` for 2: the ``signal`` module, whose enums the stage builds only once a
    signal stopped it (``_signal`` serves the rest; ``import signal`` costs every start)."""
    import signal

    return signal.Signals(signum).name

class StageLike(Protocol):
    """What pipelining needs of the stage it runs for (``clients.pipe.stage.Stage`` is one).

    Declared here, so that the stage depends on pipelining and not the other way round.
    """

    options: "PipeOptions"
    connector: "Connector"
    reader: "LineReader"
    output: "Output"
    progress: "Progress"
    #: Lines written through without every opinion.
    incomplete: int
    #: The signal that asked the stage to stop (then it finishes what it has read), or None.
    signum: int | None

    def warn(self, message: str) -> None:
        """Tell the user about one line (stderr)."""

    def report_errors(self, number: int, doc: dict) -> None:
        """Report the experts' failures for line ``number`` (the ``errors`` of ``doc``)."""

#: Largest request body the stage builds, well under msgpack's 100 MiB cap on the server.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
#: Requests a JSON Lines stream keeps in flight, so the server never waits for us.
IN_FLIGHT = 3
#: ... and at least this many per connection it may spread them over.
IN_FLIGHT_PER_CONNECTION = 2
#: Times a request may lose a freshly made connection before it is split to find the
#: documents at fault.
DROPS_BEFORE_SPLIT = 2
#: After a signal, how long the stage waits for answers it has already asked for (a longer
#: wait writes the chunk through unchanged: a user who pressed Ctrl-C wants the stage to end).
STOP_GRACE_S = 2.0
#: The options of every request (``opinions_batch``'s third argument), encoded once, by what
#: the server knows: answers as JSON text to splice, only the opinions, or neither (an older
#: server: ``Asker.older_server``).
AS_JSON, ONLY_OPINIONS, NO_OPTIONS = 2, 1, 0
REQUEST_OPTIONS = {AS_JSON: msgpack.packb({"only_opinions": True, "as_json": True}),
                   ONLY_OPINIONS: msgpack.packb({"only_opinions": True}), NO_OPTIONS: None}


def partial_line_message(number: int, size: int, stopped: bool) -> str:
    """What the stage says of a last line that came without its newline: the input ended
    there (its writer stopped mid-line), or the stage, ``stopped`` by a signal, read no more."""
    why = ("the stage was stopped while reading this line" if stopped
           else "the input ended inside this line")
    cause = "" if stopped else ": its writer stopped mid-line"
    return (f"line {number}: {why} ({size} bytes, no newline{cause}); written through byte for "
            f"byte, without a newline")


class Refused:
    """The answer for a document the server refused on its own (not per expert)."""

    def __init__(self, exc: RemoteError) -> None:
        """Keep why."""
        self.exc = exc


class Sent:
    """A chunk of lines, and the request that asks about its documents (if sent)."""

    __slots__ = ("items", "docs", "connection", "message_id", "asked")

    def __init__(self, items: list[Item]) -> None:
        """The chunk's lines; those that can be asked about are ``docs``."""
        self.items = items
        self.docs = [item for item in items if item.doc is not None]
        self.connection: Connection | None = None
        self.message_id: str | None = None
        self.asked = NO_OPTIONS  # the options it was sent with (``REQUEST_OPTIONS``)


class Asker:
    """Asks the server about documents: retries, and isolates what the server refuses."""

    def __init__(self, stage: StageLike) -> None:
        """Ask on behalf of ``stage`` (its options and connector)."""
        self.stage = stage
        self.connector = stage.connector
        self.options = stage.options
        self._names = msgpack.packb(list(self.options.names), use_bin_type=True)
        #: The options asked with (``REQUEST_OPTIONS``): fewer once an older server refuses them.
        self.asks = AS_JSON

    def packed_args(self, docs: list[Item]) -> bytes:
        """``[docs, names, options]`` as msgpack, from documents already encoded one by one.

        The stage keeps each document's text and appends the answer's opinions, so it
        asks for nothing else back (``only_opinions``), and for them as the JSON text it
        splices into the line (``as_json``).
        """
        parts = [pack_array([item.packed for item in docs]), self._names]
        options = REQUEST_OPTIONS[self.asks]
        return pack_array(parts + [options] if options is not None else parts)

    def older_server(self, exc: Exception, asked: int) -> bool:
        """True if ``exc`` answers a request sent with options (``asked``) and says the server
        predates one: from then on the stage asks without it (``as_json``: and decodes the
        answers as before; ``only_opinions``: and gets whole documents back). Every chunk
        already sent with it is asked again."""
        if not (asked and isinstance(exc, RemoteError) and exc.name == ERROR.BadArguments):
            return False
        if "'as_json'" in exc.msg and "'only_opinions'" not in exc.msg:
            self.asks = min(self.asks, ONLY_OPINIONS)  # it lists the options it knows, too
            return True
        if "only_opinions" in exc.msg:
            self.asks = NO_OPTIONS
            return True
        return False

    def send(self, sent: Sent, in_flight: Iterable[Sent] = ()) -> None:
        """Send a chunk's request without waiting (a lost connection is asked again later).

        It goes to the least busy connection, counting the chunks ``in_flight``.
        """
        if not sent.docs:
            return
        busy: dict[int, int] = {}
        for other in in_flight:
            if other.message_id is not None:
                busy[id(other.connection)] = busy.get(id(other.connection), 0) + 1
        connection = self.connector.spare(busy) if busy else self.connector.get()
        try:
            sent.asked = self.asks
            sent.message_id = connection.send_packed(METHOD.opinions_batch,
                                                     self.packed_args(sent.docs))
            sent.connection = connection
        except ServerUnavailable:
            self.connector.drop(connection)

    def answers(self, sent: Sent) -> list:
        """The answer for each document of a sent chunk, in order (``Refused`` where refused)."""
        if not sent.docs:
            return []
        if sent.connection is not None and self.connector.alive(sent.connection):
            started = time.monotonic()
            try:
                return self.checked(sent.connection.receive(sent.message_id), sent.docs)
            except (ServerUnavailable, CallTimeout, RemoteError) as exc:
                if self.older_server(exc, sent.asked):
                    return self.ask_or_isolate(sent.docs)
                if not retryable(exc):
                    return self.isolate(sent.docs, exc)
                self.recover(sent.connection, exc)
                backoff = self.backoff_after(exc, started)
                if not backoff.sleep():
                    raise stop_for(exc, self.options.endpoint, backoff.waited()) from None
                return self.ask_or_isolate(sent.docs, backoff)
        return self.ask_or_isolate(sent.docs)

    def ask_or_isolate(self, docs: list[Item], backoff: Backoff | None = None) -> list:
        """Ask about ``docs``; if the server refuses the call, find the documents at fault."""
        try:
            return self.ask(docs, backoff)
        except RemoteError as exc:
            return self.isolate(docs, exc)

    def ask(self, docs: list[Item], backoff: Backoff | None = None) -> list:
        """One ``opinions_batch`` call, asked again while it fails for a retryable reason.

        Raises ``RemoteError`` when the server refuses it, ``Stop`` when
        ``--timeout`` passes.
        """
        asked, args = self.asks, self.packed_args(docs)
        dropped = 0
        while True:
            connection = self.connector.get(backoff)
            started = time.monotonic()
            try:
                return self.checked(connection.receive(
                    connection.send_packed(METHOD.opinions_batch, args)), docs)
            except (ServerUnavailable, CallTimeout, RemoteError) as exc:
                if self.older_server(exc, asked):
                    asked, args = self.asks, self.packed_args(docs)
                    continue
                if not retryable(exc):
                    raise
                self.recover(connection, exc)
                if isinstance(exc, ServerUnavailable):
                    dropped += 1
                    if dropped >= DROPS_BEFORE_SPLIT:
                        # A server that takes the connection and drops it on this
                        # request each time (a message over its size cap, or a
                        # document that crashes it): the request is at fault.
                        raise RemoteError(ERROR.ServerUnavailable, f"the server dropped the "
                                          f"connection on this request {dropped} times "
                                          f"({exc})") from None
                backoff = backoff or self.backoff_after(exc, started)
                if not backoff.sleep():
                    raise stop_for(exc, self.options.endpoint, backoff.waited()) from None

    def backoff_after(self, exc: Exception, started: float) -> Backoff:
        """The retry window after a first failure: ``--timeout``, less the wait of a timed-out call."""
        spent = time.monotonic() - started if isinstance(exc, CallTimeout) else 0.0
        return self.connector.backoff(max(0.0, self.options.timeout - spent))

    def recover(self, connection: Connection, exc: Exception) -> None:
        """After a retryable failure: a connection that is lost, draining or stuck is dropped."""
        if not (isinstance(exc, RemoteError) and exc.name == ERROR.Overloaded):
            self.connector.drop(connection)

    @staticmethod
    def checked(answers, docs: list[Item]) -> list:
        """The server's answers, if they are one per document."""
        if not isinstance(answers, list) or len(answers) != len(docs):
            raise RemoteError(ERROR.InternalError, f"the server answered {len(docs)} documents "
                                               f"with {type(answers).__name__}")
        return answers

    def isolate(self, docs: list[Item], exc: RemoteError) -> list:
        """The server refused a whole call: stop if the call is wrong, else find the culprits."""
        try:
            self.ask([])
        except RemoteError as probe:
            raise stop_for(probe, self.options.endpoint) from None
        return self.bisect(docs, exc)

    def bisect(self, docs: list[Item], exc: RemoteError) -> list:
        """Answers for ``docs``, which the server refused together with ``exc``."""
        if len(docs) == 1:
            return [Refused(exc)]
        middle = len(docs) // 2
        answers: list = []
        for half in (docs[:middle], docs[middle:]):
            try:
                answers += self.ask(half)
            except RemoteError as half_exc:
                answers += self.bisect(half, half_exc)
        return answers


class Pipeline:
    """The JSON Lines loop of one stage."""

    def __init__(self, stage: StageLike, preset: list[Item] | None = None) -> None:
        """Run for ``stage`` (its reader, output, options); ``preset`` lines come first."""
        self.stage = stage
        self.preset = list(preset or [])
        self.reader = stage.reader
        self.output = stage.output
        self.options = stage.options
        self.asker = Asker(stage)
        self.number = 0
        self.stop_deadline: float | None = None  # set when a signal asks the stage to stop
        #: The lines last written through after a signal, not yet named on stderr, and the
        #: signal's name (a run of chunks is named once).
        self.through: tuple[int, int, str] | None = None

    def read_chunk(self) -> tuple[list[Item], bool]:
        """The next chunk of lines, and whether the input has ended.

        It takes every whole line already read at once (up to ``--batch-size``), and sends
        the chunk as soon as no more is ready (the input paused) or it holds
        ``MAX_CHUNK_BYTES`` of documents.
        """
        if self.preset:
            item = self.output.read(self.preset.pop(0))
            self.number = item.number
            return [item], False
        chunk: list[Item] = []
        size = 0
        batch_size, reader, output = self.options.batch_size, self.reader, self.output
        while True:
            with output.holding():  # lines taken from the reader are on the ledger
                lines = reader.readlines(batch_size - len(chunk))
                if not lines:
                    return chunk, True
                try:
                    items = parse_lines(self.number + 1, lines)
                    for count, item in enumerate(items, 1):
                        size += len(item.packed) if item.packed is not None else 0
                        if size >= MAX_CHUNK_BYTES and count < len(items):
                            reader.unread(b"".join(lines[count:]))  # for the next chunk
                            del items[count:]
                            break
                except BaseException:
                    reader.unread(b"".join(lines))  # none of them is on the ledger yet
                    raise
                output.pending.extend(items)
                self.number += len(items)
            chunk += items
            if len(chunk) >= batch_size or size >= MAX_CHUNK_BYTES or not reader.ready():
                return chunk, False  # full, or the input paused: answer what we have now

    def run(self) -> None:
        """Read, send, and write answers until the input ends."""
        try:
            self._run()
        finally:
            self.say_written_through()

    def _run(self) -> None:
        in_flight: deque[Sent] = deque()
        most = max(IN_FLIGHT, IN_FLIGHT_PER_CONNECTION * self.options.connections)
        ended = False
        while True:
            if not ended:
                chunk, ended = self.read_chunk()
                if chunk:
                    sent = Sent(chunk)
                    if not self.grace_over():  # after it, no answer would be waited for
                        self.asker.send(sent, in_flight)
                    in_flight.append(sent)
            while in_flight and (len(in_flight) >= most or ended
                                 or not self.reader.ready()):
                sent = in_flight.popleft()
                answers = self.answers_unless_stopped(sent)
                if answers is None:
                    self.write_through(sent)
                else:
                    self.write(sent, answers)
            if ended and not in_flight:
                self.stage.progress.add(0, final=True)
                return

    def grace_over(self) -> bool:
        """True once a signal asked the stage to stop more than ``STOP_GRACE_S`` ago."""
        if self.stage.signum is None:
            return False
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + STOP_GRACE_S
        return time.monotonic() > self.stop_deadline

    def answers_unless_stopped(self, sent: Sent) -> list | None:
        """``sent``'s answers; ``None`` if a signal asked the stage to stop and they did not
        come within ``STOP_GRACE_S`` (a signal ends the wait for them at once)."""
        for _ in range(2):  # the wait a signal interrupts, then the grace after it
            try:
                if not self.answer_in_time(sent):
                    return None
                return self.asker.answers(sent)
            except WaitInterrupted:
                continue
        return None

    def answer_in_time(self, sent: Sent) -> bool:
        """False if the stage was asked to stop and ``sent``'s answer does not come within
        ``STOP_GRACE_S`` of the signal (True otherwise: wait for it as usual)."""
        if self.stage.signum is None or not sent.docs:
            return True
        self.grace_over()  # starts the grace
        connection = sent.connection
        if connection is None or sent.message_id is None:
            return False
        while True:
            try:
                if sent.message_id in connection.collect():
                    return True
            except (OSError, ServerUnavailable, RemoteError):
                return False
            remaining = self.stop_deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([connection.fileno()], [], [], min(remaining, 0.05))

    def write_through(self, sent: Sent) -> None:
        """Write a chunk's lines unchanged: the stage is stopping and cannot wait for them."""
        items = sent.items
        name = signal_name(self.stage.signum)
        for item in items:
            if item.passes_through():
                self.warn_passed(item)
            else:
                self.stage.incomplete += 1
        first, last = items[0].number, items[-1].number
        if self.through is not None and self.through[1] + 1 == first:
            self.through = (self.through[0], last, name)  # one message for a run of chunks
        else:
            self.say_written_through()
            self.through = (first, last, name)
        self.output.write_chunk([(item, None) for item in items])
        self.output.flush()
        self.stage.progress.add(len(items))

    def say_written_through(self) -> None:
        """Name on stderr the run of lines last written through unchanged after a signal."""
        if self.through is None:
            return
        first, last, name = self.through
        self.through = None
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        self.stage.warn(f"{where}: stopped by {name} before the answers came; written "
                        f"through unchanged")

    def warn_passed(self, item: Item) -> None:
        """Say why a line that is not a document to ask about is written through."""
        if not item.problem:
            return
        self.stage.incomplete += 1
        if not item.raw.endswith(b"\n") and item.problem.startswith(("not valid JSON",
                                                                     "not UTF-8")):
            problem = item.problem.split("; send one JSON object")[0]  # no advice for a cut line
            self.stage.warn(partial_line_message(item.number, len(item.raw), self.reader.stopped)
                            + f" ({problem})")
        else:
            self.stage.warn(f"line {item.number}: {item.problem}; written through unchanged")

    def write(self, sent: Sent, answers: list) -> None:
        """Write a chunk's lines, in order: each answered, or through unchanged."""
        stage = self.stage
        answers_iter = iter(answers)
        lines: list[tuple[Item, bytes | None]] = []
        for item in sent.items:
            if item.doc is None:  # passes through
                lines.append((item, None))
                self.warn_passed(item)
                continue
            answer = next(answers_iter)
            if (item.plain and answer.__class__ is bytes and b'"errors": ' not in answer
                    and b'"recomputed": ' not in answer):
                # what answered_line writes for it (every expert answered), without the call
                lines.append((item, item.raw[:-2] + b", " + answer[1:] + b"\n"))
                continue
            if isinstance(answer, Refused):
                lines.append((item, None))
                stage.incomplete += 1
                stage.warn(f"line {item.number}: the server refused it ({describe(answer.exc)}); "
                           f"written through unchanged")
                continue
            try:
                data, complete, errors = answered_line(item, answer, self.options.names)
            except (ValueError, TypeError, UnicodeEncodeError) as exc:
                lines.append((item, None))
                stage.incomplete += 1
                stage.warn(f"line {item.number}: the answer cannot be written as JSON ({exc}); "
                           f"written through unchanged")
                continue
            lines.append((item, data))
            if not complete:
                stage.incomplete += 1
                stage.report_errors(item.number, {"errors": errors})
        self.say_written_through()
        self.output.write_chunk(lines)
        self.output.flush()
        stage.progress.add(len(sent.items))
