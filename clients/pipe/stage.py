"""One run of the stage: telling JSON Lines from one document, and every way out of it.

Whatever ends a run (the input's end, a server that stays away, a refused
request, SIGTERM or SIGINT, a bug), every line read and not yet written is
written through unchanged, in order, before the stage exits (see
``clients.pipe.output``).

Signals (SIGINT, SIGTERM, SIGHUP): the handler only notes the signal (and wakes
a wait for input through ``_signal.set_wakeup_fd``). A stage whose stdin is a
terminal or a file then reads no more input; one whose stdin is a pipe (or a
socket) reads on to its end, because Ctrl-C stops the stage before it too,
which writes what it read and closes the pipe, and every line in that pipe is
one the upstream stage counts as written (it stops reading when nothing
arrives for ``INPUT_QUIET_S``, 5 s: a writer that was not stopped). Either way
it finishes what it has read: lines are answered while the server answers
within ``STOP_GRACE_S`` (2 s) of the signal, then written through unchanged
(named on stderr); a last line that came without its newline (its writer died
mid-line) is written back byte for byte, without one, and named on stderr. A
second signal stops at once: whatever is not yet written goes out unchanged,
and the bytes left unread in the pipe are counted on stderr. Either way the stage
says on stderr that it was stopped and exits with 128 + the signal's number
(130 for SIGINT, 143 for SIGTERM). A closed stdout (the next stage went away:
EPIPE, SIGPIPE's error) is said on stderr, with how many lines read could not be
written, and exits with 141 (128 + SIGPIPE), or 128 + the signal that stopped
the stage first (Ctrl-C stops every stage of a pipeline; the next one may close
its input before this one has written all it read).
"""

from __future__ import annotations

import _signal  # the C module under ``signal``, whose enums cost a stage ~1 ms to build
import os
import sys

from expertd.endpoint import EndpointError, parse_endpoint
from expertd.spec import ERROR, exit_code
from expertd.clients.pipe.connecting import Connector
from expertd.clients.pipe.options import PipeOptions
from expertd.clients.pipe.output import Output, PatientText, Progress
from expertd.clients.pipe.pipelining import Pipeline, partial_line_message, signal_name
from expertd.clients.pipe.reading import (INCOMPLETE, MAX_DOCUMENT_BYTES, VALUE, LineReader, classify,
                                  drains_after_stop, parse_line)
from expertd.clients.calls import WaitInterrupted
from expertd.clients.pipe.retrying import Stop

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import IO

EXIT_OK = 0
#: Some document got no opinion (e.g. ``InvalidDocument``, ``ExpertFailed``).
EXIT_PARTIAL = exit_code(ERROR.InvalidDocument)
#: The request was wrong (e.g. ``UnknownExpert``).
EXIT_USAGE = exit_code(ERROR.UnknownExpert)
#: No server answered.
EXIT_UNREACHABLE = exit_code(ERROR.ServerUnavailable)
#: Lines read before detection gives up and calls the input JSON Lines.
DETECT_LINES = 64


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGINT, SIGHUP) asked the stage to stop."""

    def __init__(self, signum: int) -> None:
        """Which signal."""
        super().__init__(signum)
        self.signum = signum


class Stage:
    """Runs one invocation of the pipe stage."""

    def __init__(self, options: PipeOptions, stdin_fd: int, stdout: IO[bytes],
                 stderr: IO[str]) -> None:
        """Read documents from ``stdin_fd``, write them to ``stdout``, talk on ``stderr``."""
        self.options = options
        #: The first signal that asked the stage to stop (it then finishes what it has read).
        self.signum: int | None = None
        self.reader = LineReader(stdin_fd, stop_requested=lambda: self.signum is not None,
                                 drain=drains_after_stop(stdin_fd),
                                 abort_requested=lambda: self.output.deferred is not None)
        self.output = Output(stdout)
        self.output.raise_deferred = self._raise_deferred
        self.err = PatientText(stderr)
        self.connector = Connector(options, self.warn)
        self.connector.stop_waiting = lambda: self.signum is not None
        self.incomplete = 0
        self.stopping = False
        self.progress = Progress(self.err, options.progress if options.progress is not None
                                 else stderr.isatty())

    def warn(self, message: str) -> None:
        """One line on stderr, prefixed with the command name."""
        self.err.write(f"expertd pipe: {message}\n")
        self.err.flush()

    def report_errors(self, number: int, doc: dict) -> None:
        """Name, on stderr, each expert that gave no opinion for a document."""
        errors = doc.get("errors")
        for name, error in (errors.items() if isinstance(errors, dict) else ()):
            if name in self.options.names or not self.options.names:
                message = error.get("message") if isinstance(error, dict) else error
                kind = error.get("name") if isinstance(error, dict) else "Error"
                self.warn(f"line {number}: {name}: {kind}: {message}")

    # -- signals --

    def on_signal(self, signum: int, frame) -> None:
        """The first signal is only noted: the stage reads no more and finishes what it read.

        A second one stops at once, unless a line is being taken or written (then
        right after it): every line not yet written goes out unchanged.
        """
        if self.signum is None:
            self.signum = signum
            return
        if self.output.writing or self.stopping:
            self.output.deferred = signum
            return
        raise Interrupted(signum)

    def _raise_deferred(self) -> None:
        signum, self.output.deferred = self.output.deferred, None
        if not self.stopping:
            raise Interrupted(signum)

    # -- running --

    def run(self) -> int:
        """Process all of stdin; return the exit status."""
        try:
            try:
                self.detect_and_run()
                if self.signum is not None:
                    return self.stopped_by_signal()
                return EXIT_PARTIAL if self.incomplete else EXIT_OK
            except Stop as exc:
                tail = self.buffered()
                self.output.write_through_pending(tail)
                self.output.written += tail.count(b"\n")
                self.warn(str(exc))
                self.pass_rest(tail)
                return exc.code if self.signum is None else self.stopped_by_signal()
            except Interrupted:
                raise
            except BrokenPipeError:
                raise
            except WaitInterrupted:  # a signal ended a wait for the server outside the pipeline
                count = self.output.write_through_pending()
                self.warn(f"{count} line(s) not yet answered were written through unchanged, "
                          f"and the rest of the input as it comes")
                self.pass_rest()  # a pipe to its end (the stage before it wrote those lines)
                return self.stopped_by_signal()
            except Exception as exc:  # noqa: BLE001 - a bug must not cost a line either
                self.output.write_through_pending(self.buffered())
                self.warn(f"internal error in the pipe stage ({type(exc).__name__}: {exc}); "
                          f"lines not yet answered were written through unchanged; "
                          f"please report this")
                self.pass_rest()
                return exit_code(ERROR.InternalError)
        except Interrupted as exc:
            self.stopping = True
            count, _ = self.write_through_rest()
            waiting = None if self.reader.eof else self.reader.waiting_bytes()
            lost = (f"; the rest of the input was not read ({waiting} byte(s) were waiting in "
                    f"the pipe: lost)" if waiting else "")
            self.warn(f"stopped by {signal_name(exc.signum)} (signalled twice); {count} "
                      f"line(s) not yet answered were written through unchanged{lost}")
            return 128 + exc.signum
        finally:
            self.stopping = True
            self.output.flush()
            self.connector.close()

    def write_through_rest(self) -> tuple[int, bytes]:
        """Write every line not yet written, and the input not yet split into lines, unchanged
        (a last line without its newline is named); the number of lines, and that input."""
        tail = self.buffered()
        count = self.output.write_through_pending(tail)
        if tail and not tail.endswith(b"\n"):
            self.warn(partial_line_message(self.output.written + tail.count(b"\n") + 1,
                                           len(tail) - tail.rfind(b"\n") - 1, self.reader.stopped))
        tail_lines = tail.count(b"\n") + (0 if tail.endswith(b"\n") or not tail else 1)
        self.output.written += tail_lines
        return count + tail_lines, tail

    def stopped_by_signal(self) -> int:
        """Say that a signal stopped the stage after it wrote every line it read; the exit status."""
        rest = ("the rest of the input was not read" if self.reader.stopped or not self.reader.eof
                else "the input was read to its end")
        self.warn(f"stopped by {signal_name(self.signum)} after {self.output.written} "
                  f"line(s): every line read was written out (answered, or unchanged as said "
                  f"above); {rest}")
        return 128 + self.signum

    def buffered(self) -> bytes:
        """Input read from stdin but not yet split into lines, byte for byte."""
        return self.reader.take_buffered()

    def pass_rest(self, written: bytes = b"") -> None:
        """Copy the rest of stdin to stdout unchanged (the server cannot be asked).

        A signal may stop the copy while it waits for input, never between
        taking a block from the buffer and writing it. ``written`` is the input last
        written through (a last line cut off in it is named, too).
        """
        last = written or b"\n"
        size = len(last) - last.rfind(b"\n") - 1  # of the last line so far, if cut
        while True:
            self.output.writing = True
            try:
                block = self.reader.take_buffered()
                if block:
                    self.output.out.write(block)
                    self.output.flush()
                    self.output.written += block.count(b"\n")
                    size = len(block) - block.rfind(b"\n") - 1 if b"\n" in block else size + len(block)
                    last = block
            finally:
                self.output.writing = False
            if self.output.deferred is not None:
                self._raise_deferred()
            if self.reader.eof:
                if not last.endswith(b"\n"):
                    self.output.written += 1
                    self.warn(partial_line_message(self.output.written, size, self.reader.stopped))
                return
            self.reader.fill()

    def detect_and_run(self) -> None:
        """Pick JSON Lines or one document from the first lines, without reading all of stdin.

        A first line that is a whole JSON value means JSON Lines; a first line
        that starts a value (``{``) is read on until the value is whole (one
        pretty-printed document) or cannot be (JSON Lines whose first line is
        bad); anything else means JSON Lines at once.
        """
        mode = self.options.mode
        if mode == "single":
            self.run_single(self.read_to_end())
            return
        if mode == "lines":
            Pipeline(self).run()
            return
        head: list[bytes] = []
        text = b""
        checked = 0  # size of ``text`` when last classified
        try:
            while len(text) <= MAX_DOCUMENT_BYTES:
                with self.output.holding():  # a line taken from the reader is kept in ``text``
                    line = self.reader.readline()
                    if line is None:
                        break
                    head.append(line)
                    text += line
                if len(head) > DETECT_LINES and len(text) < 2 * checked:
                    continue  # a long document: parse again only when it has doubled
                checked = len(text)
                state = classify(text)
                if state == INCOMPLETE:
                    continue
                if state == VALUE and sum(1 for h in head if h.strip()) > 1:
                    self.reader.unread(text)
                    text = b""
                    self.run_single(self.read_to_end())
                    return
                break
        except Interrupted:
            self.reader.unread(text)  # the lines read so far are written through, too
            raise
        self.reader.unread(text)
        Pipeline(self).run()

    def read_to_end(self) -> bytes:
        """All the rest of stdin; until it is all read it stays in the reader (a signal
        meanwhile writes it through)."""
        while not self.reader.eof:
            self.reader.fill()
        return self.reader.take_buffered()

    def run_single(self, raw: bytes) -> None:
        """One document that may span many lines (pretty-printed JSON)."""
        item = parse_line(1, raw)
        if ((item.problem or "").startswith("not valid JSON") and raw.count(b"\n") > 1
                and self.options.mode == "auto"):
            self.reader.unread(raw)  # not one document after all: JSON Lines
            Pipeline(self).run()
        elif raw:
            Pipeline(self, preset=[item]).run()


def run(options: PipeOptions, stdin_fd: int | None = None, stdout: IO[bytes] | None = None,
        stderr: IO[str] | None = None) -> int:
    """Run the stage on stdin/stdout (or the given streams); return the exit status."""
    try:
        parse_endpoint(options.endpoint)
    except EndpointError as exc:  # before reading anything: a usage error, in one line
        (stderr or sys.stderr).write(f"expertd pipe: {exc}\n")
        return EXIT_USAGE
    stage = Stage(options, sys.stdin.fileno() if stdin_fd is None else stdin_fd,
                  stdout or sys.stdout.buffer, stderr or sys.stderr)
    previous = {}
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    previous_wakeup = None
    try:
        previous_wakeup = _signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        stage.reader.wake_fd = stage.connector.wake_fd = wake_read
        for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
            previous[sig] = _signal.signal(sig, stage.on_signal)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        return stage.run()
    except BrokenPipeError:
        # The next stage went away: the lines read and not yet written have nowhere to go.
        stage.stopping = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        # Interrupted (Ctrl-C reaches the whole pipeline) and then cut off by the next stage,
        # which stopped too: the signal is the cause, and the status says which.
        signum = stage.signum or _signal.SIGPIPE
        why = f"stopped by {signal_name(stage.signum)}; " if stage.signum else ""
        try:
            stage.warn(f"{why}stdout was closed (the next stage stopped reading) after "
                       f"{stage.output.written} line(s); {len(stage.output.pending)} line(s) "
                       f"read could not be written; stopped")
        except OSError:  # stderr went with it (``2>&1 | head``): the status still says so
            pass
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
        if previous_wakeup is not None:
            _signal.set_wakeup_fd(previous_wakeup)
        os.close(wake_read)
        os.close(wake_write)
