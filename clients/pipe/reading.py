"""Reading stdin: lines as they arrive, each parsed and encoded for the server on its own.

Every problem a line can have is found here, before anything is sent, so a
line the server could never be asked about is written through unchanged
(with a warning naming it) and never costs its neighbours their opinions:
not JSON, not an object, nested too deep, a number no double holds (it would
come back as ``Infinity``, which is not JSON), an integer msgpack cannot carry
(beyond 64 bits), a lone surrogate (a half emoji), or too large.
"""

from __future__ import annotations

import os
import select
import stat

from expertd import jsonc
from expertd.clients import lean_msgpack as msgpack  # msgpack's bytes, without importing it

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the pipe stage starts faster
if TYPE_CHECKING:
    from typing import Iterator

#: After a stop was asked for, how long a reader that drains its input (a pipe) waits for
#: more before it stops reading: an upstream stage stopped by the same Ctrl-C writes what it
#: read within its own grace (``STOP_GRACE_S``, 2 s) and closes the pipe; a writer that was
#: not stopped and holds the pipe open silently does not keep the stage waiting for ever.
INPUT_QUIET_S = 5.0


def drains_after_stop(fd: int) -> bool:
    """True if input on ``fd`` should be read to its end after a stop is asked for: a pipe or
    a socket, whose writer (an upstream stage, stopped by the same Ctrl-C) already counts
    what it wrote there as written. A terminal or a file stops at once (what is not read
    stays in the file, or was never typed)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


#: Largest document the stage sends at all: with a full chunk (8 MiB) it stays under the
#: server's default message cap (max_message_bytes, 32 MiB), over which it drops the connection.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


class LineReader:
    """Lines of a file descriptor, and whether more are ready without blocking.

    ``stop_requested`` (a callable) tells the reader to read no more from the
    descriptor: it then behaves as at the end of input, and what is already in
    its buffer is still returned, line by line, the last possibly without a
    newline. With ``drain`` (stdin is a pipe: ``drains_after_stop``) it reads on
    to the end of the input instead, and stops only when none arrives for
    ``quiet_s``. ``wake_fd`` (the read end of ``signal.set_wakeup_fd``'s pipe) ends a
    wait for input as soon as a signal arrives, so that ``stop_requested`` is
    asked again.
    """

    def __init__(self, fd: int, wake_fd: int | None = None, stop_requested=None,
                 drain: bool = False, quiet_s: float = INPUT_QUIET_S,
                 abort_requested=None) -> None:
        """Read from ``fd`` (stdin's); ``abort_requested`` (a callable, asked when a signal
        wakes a wait) stops the reading at once, draining or not (a second signal)."""
        self.fd = fd
        self.buf = bytearray()
        self.eof = False
        #: True when reading stopped on request (not at the end of the input).
        self.stopped = False
        self.wake_fd = wake_fd
        self.stop_requested = stop_requested
        self.drain = drain
        self.quiet_s = quiet_s
        self.abort_requested = abort_requested

    def _stop_if_asked(self) -> bool:
        if not self.drain and self.stop_requested is not None and self.stop_requested():
            self.stopped = self.eof = True
        return self.stopped

    def draining(self) -> bool:
        """True if a stop was asked for and the reader reads on to the end of its input."""
        return self.drain and self.stop_requested is not None and self.stop_requested()

    def waiting_bytes(self) -> int | None:
        """Bytes waiting unread in the input (a pipe's or socket's), if the system says."""
        import fcntl
        import termios
        try:
            return int.from_bytes(fcntl.ioctl(self.fd, termios.FIONREAD, b"\0" * 4), "little")
        except OSError:
            return None

    def _wait_readable(self) -> bool:
        """Wait until the descriptor can be read; False if a stop was asked for meanwhile."""
        watched = [self.fd] if self.wake_fd is None else [self.fd, self.wake_fd]
        while True:
            timeout = self.quiet_s if self.draining() else None
            readable, _, _ = select.select(watched, [], [], timeout)
            if not readable:  # draining, and the writer has gone quiet without closing
                self.stopped = self.eof = True
                return False
            if self.wake_fd is not None and self.wake_fd in readable:
                try:
                    os.read(self.wake_fd, 512)  # the signal numbers: the flag says which
                except (BlockingIOError, InterruptedError):
                    pass
                if self._stop_if_asked():
                    return False
                if self.abort_requested is not None and self.abort_requested():
                    self.stopped = self.eof = True
                    return False
            if self.fd in readable:
                return True

    def _read(self) -> None:
        if self._stop_if_asked():
            return
        while True:
            if self.wake_fd is not None and not self._wait_readable():
                return
            try:
                chunk = os.read(self.fd, 1 << 16)
                break
            except BlockingIOError:  # a stdin another program made non-blocking, empty for now
                if self.wake_fd is None:
                    select.select([self.fd], [], [])
        if not chunk:
            self.eof = True
        else:
            self.buf += chunk

    def fill(self) -> None:
        """Read one block from the descriptor into the buffer (sets ``eof`` at the end)."""
        self._read()

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is still to be read."""
        self.buf[:0] = data

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

    def readlines(self, most: int) -> list[bytes]:
        """The whole lines already read (at least one: it waits for one), at most ``most``, each
        with its newline; at the end of input the last may lack one; ``[]`` at the end."""
        buf = self.buf
        while b"\n" not in buf and not self.eof:
            self._read()
        last = buf.rfind(b"\n")
        if last < 0:  # the end of the input: a last line without its newline, or nothing
            return [self.take_buffered()] if buf else []
        block = bytes(buf[:last + 1])
        if b"\r" in block:  # bytes.splitlines would split at a lone \r too
            lines, start = [], 0
            while len(lines) < most and start <= last:
                end = block.index(b"\n", start) + 1
                lines.append(block[start:end])
                start = end
            del buf[:start]
            return lines
        lines = block.splitlines(True)
        if len(lines) > most:
            del lines[most:]
            del buf[:sum(map(len, lines))]
        else:
            del buf[:last + 1]
        return lines

    def take_buffered(self) -> bytes:
        """What was read from the descriptor but not yet returned (emptied)."""
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def rest(self) -> Iterator[bytes]:
        """Everything not yet returned, in blocks, to the end of input."""
        if self.buf:
            yield self.take_buffered()
        while not self.eof:
            self._read()
            if self.buf:
                yield self.take_buffered()


class Item:
    """One input line: its raw bytes and, if it can be asked about, the document.

    ``packed`` is the document msgpack-encoded for the server; ``problem``
    says why a line is written through instead.
    """

    __slots__ = ("number", "raw", "doc", "packed", "problem", "plain")

    def __init__(self, number: int, raw: bytes, doc: dict | None = None,
                 packed: bytes | None = None, problem: str | None = None,
                 plain: bool = False) -> None:
        """Line ``number`` (from 1), as read; ``doc`` and ``packed`` if it can be sent.
        ``plain``: the line is ``{...}`` and its newline, nothing around them, and the document
        carries none of the keys an answer brings (``opinions``, ``errors``, ``recomputed``,
        ``versions``), so that an answer's JSON text is spliced in before its closing brace."""
        self.number, self.raw, self.doc, self.packed, self.problem, self.plain = (
            number, raw, doc, packed, problem, plain)

    def passes_through(self) -> bool:
        """True if the line is written as it came, without asking the server."""
        return self.doc is None


class NotPortable(ValueError):
    """A JSON number that would not come back as JSON (NaN, Infinity, 1e400)."""


def _constant(name: str):
    raise NotPortable(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotPortable(f"the number {text[:40]} is beyond what a double holds")
    return value


_DECODER = jsonc.Decoder(parse_constant=_constant, parse_float=_float)  # not json: expertd/jsonc.py
_PACKER = msgpack.Packer(use_bin_type=True)  # reused: it starts afresh after a failure


def decode(text: str | bytes):
    """``json.loads`` that refuses NaN, Infinity and numbers no double holds."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # strict, like json.loads: bad UTF-8 is a ValueError
    return _DECODER.decode(text)  # not JSON: json's own error message


def problem_of(exc: BaseException) -> str:
    """Why a line could not be read as a document, in words."""
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    if isinstance(exc, NotPortable):
        return f"not portable JSON ({exc})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 ({exc.reason} at byte {exc.start})"
    return f"not valid JSON ({exc})"


#: Characters of a plain-text line quoted back in the suggestion made for it.
SUGGESTION_CHARS = 40


def suggestion(text: bytes) -> str:
    """What to send instead of a line that is not a JSON object: for plain text, that very
    text as a document (shortened), such as ``{"text": "I love it"}``."""
    try:
        line = text.decode("utf-8").strip()
    except UnicodeDecodeError:
        line = ""
    if line and line[0] not in '{["':
        import json  # only for a line that is not a document

        try:
            json.loads(line)  # a number, true, null: not text to quote back
        except ValueError:
            short = line if len(line) <= SUGGESTION_CHARS else line[:SUGGESTION_CHARS - 1] + "\u2026"
            document = json.dumps({"text": short}, ensure_ascii=False)
            return f"send one JSON object per line, such as {document}"
    return 'send one JSON object per line, such as {"text": "I love it"}'


def pack_document(doc: dict) -> bytes:
    """The document as the server will receive it; raises ``ValueError`` if msgpack cannot."""
    try:
        return _PACKER.pack(doc)
    except OverflowError:
        raise ValueError("it holds an integer beyond 64 bits") from None
    except UnicodeEncodeError as exc:
        raise ValueError(f"it holds a lone surrogate ({exc.object[exc.start:exc.end]!r}), "
                         f"half of a character") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"msgpack cannot encode it ({exc})") from None


def parse_line(number: int, raw: bytes) -> Item:
    """Parse and encode one line; a line that cannot be sent keeps a ``problem``."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        return Item(number, raw, problem=f"document is {len(raw)} bytes, over the "
                                         f"{MAX_DOCUMENT_BYTES} a stage sends")
    text = raw.strip()
    if not text:
        return Item(number, raw)
    try:
        value = decode(text)
    except (ValueError, RecursionError) as exc:
        problem = problem_of(exc)
        if problem.startswith("not valid JSON"):
            problem += f"; {suggestion(text)}"
        return Item(number, raw, problem=problem)
    if not isinstance(value, dict):
        return Item(number, raw, problem=f"not a JSON object (got {type(value).__name__}); "
                                         f"{suggestion(text)}")
    try:
        packed = pack_document(value)
    except ValueError as exc:
        return Item(number, raw, problem=f"cannot be sent to the server: {exc}")
    return Item(number, raw, doc=value, packed=packed)


def parse_lines(first: int, lines: list[bytes]) -> list[Item]:
    """``parse_line`` of each of ``lines``, numbered from ``first``.

    The common line (a JSON object alone on its line, with its newline) takes a short
    path to the same document and bytes; any other, or one the short path trips on,
    goes through ``parse_line``, which says what is wrong with it.
    """
    scan, pack = _DECODER.scan_once, _PACKER.pack
    items: list[Item] = []
    append = items.append
    number = first
    for raw in lines:
        if raw[:1] == b"{" and raw[-2:] == b"}\n" and len(raw) <= MAX_DOCUMENT_BYTES:
            try:
                text = raw.decode("utf-8")
                value, end = scan(text, 0)
                if end == len(text) - 1:
                    append(Item(number, raw, value, pack(value), None, bool(value) and (
                        "opinions" not in value and "errors" not in value
                        and "recomputed" not in value and "versions" not in value)))
                    number += 1
                    continue
            except Exception:  # noqa: BLE001 - parse_line finds out, and says, what is wrong
                pass
        append(parse_line(number, raw))
        number += 1
    return items


# -- telling JSON Lines from one document ---------------------------------------

VALUE, INCOMPLETE, INVALID = "value", "incomplete", "invalid"


def classify(text: bytes) -> str:
    """Is ``text`` a whole JSON value, the start of one, or neither?

    Used on the first lines of input: a first line that is a whole value means
    JSON Lines, the start of one (``{``) means one pretty-printed document,
    and anything else means JSON Lines whose first line is bad (never a reason
    to read all of stdin before writing).
    """
    try:
        stripped = text.decode("utf-8").strip()
    except UnicodeDecodeError:
        return INVALID
    if not stripped:
        return INCOMPLETE
    try:
        jsonc.loads(stripped)
        return VALUE
    except (ValueError, RecursionError):
        pass
    import json  # only for a first line that is not a whole value

    try:
        json.loads(stripped)
    except json.JSONDecodeError as exc:
        return INCOMPLETE if exc.pos >= len(stripped) else INVALID
    except (ValueError, RecursionError):
        return INVALID
    return VALUE
