"""Putting what callers send into the log safely: escaped, bounded, and not too often.

Anything a peer controls (an expert name, a method name, a rejected event) is
shown through ``shown``: control characters (a newline would forge a log line)
are escaped and long values cut, so a log line never grows with what was sent.
``RateLimitedLog`` turns a flood of the same warning into one line per interval
with a count. ``without_paths`` keeps the server's file paths out of text that is
sent to a remote caller (a model library's exception message).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

#: The longest rendering of a caller's value in a log line or an error message.
SHOWN_LIMIT = 80


#: An absolute file path (POSIX, ``~/``, ``file://``, or a Windows drive), up to its last component.
_PATH = re.compile(r"(?:file://)?(?<![\w.~-])(?:[A-Za-z]:[\\/]|~?/)(?:[^\s'\"/\\:,;()\[\]{}<>]+[\\/])+")


#: A quoted absolute path, which may hold spaces (``'/srv/my app/m.h5'``, as ``OSError`` shows one).
_QUOTED_PATH = re.compile(
    r"""(['"])((?:file://)?(?:[A-Za-z]:[\\/]|~?/)(?:(?!\1)[^\n])*[\\/])((?:(?!\1)[^\n\\/])*)\1""")


def without_paths(text: str) -> str:
    """``text`` with every absolute path's directories replaced by ``.../`` (file names stay).

    A path in quotes is taken whole, spaces and all; an unquoted one ends at the
    first space (where it ends cannot be told).
    """
    text = _QUOTED_PATH.sub(lambda m: f"{m[1]}.../{m[3]}{m[1]}", text)
    return _PATH.sub(".../", text)


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """``value`` as a short, printable, escaped string (``repr`` for non-strings)."""
    text = value if isinstance(value, str) else _safe_repr(value, limit)
    if len(text) > limit:
        text = text[:limit] + f"...({len(text)} chars)"
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _safe_repr(value: Any, limit: int) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value[:limit + 1])
        return repr(data) + (f"...({len(value)} bytes)" if len(value) > limit else "")
    try:
        text = repr(value)
    except Exception:  # a hostile object's repr may raise
        text = f"<{type(value).__name__}>"
    return text


class RateLimitedLog:
    """Log one message per ``interval`` seconds per key; count what was held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        """Write through ``logger`` at most once per ``interval`` per key."""
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless ``key`` was logged within the interval; True if logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        self._last[key] = now
        if len(self._last) > 1000:  # keys come from a closed set, but stay bounded anyway
            self._last = {key: now}
        suffix = f" ({held} more like this in the last {self.interval:g} s)" if held else ""
        self.logger.warning(message + suffix, *args)
        return True
