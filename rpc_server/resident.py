"""What the server gives back once its experts are loaded, before it announces ready.

Measured with the default experts (``python -m bench.memory_ready``,
bench/RESULTS-memory-ready.md): of about 640 MiB resident when ready, 350 MiB
were pages of shared libraries, 230 MiB of them TensorFlow's
``libtensorflow_cc.so``: code and read-only data that ``import tensorflow``
runs once (registering thousands of ops and kernels) and a model call never
touches again. After handing them back and calling every model, 37 MiB of
library pages were resident again: that is what serving needs. The heap
(250 MiB) is in use, not freed and kept: glibc's arenas held under 1 MiB
(one small arena per thread) and ``malloc_trim`` alone returned nothing.

* ``drop_clean_library_pages``: ``madvise(MADV_DONTNEED)`` on every private,
  read-only, file-backed mapping that holds no private (copied-on-write) page.
  Such a page is an unmodified copy of the file: it stays in the kernel's page
  cache (shared with every other process that maps the library, e.g. the
  other workers), and a later access maps it again from there (a minor fault,
  no disk read). Writable mappings and relocated ones (``Anonymous`` pages)
  are left alone, so nothing the process wrote is lost.
* ``linecache.clearcache()``: TensorFlow's op registration reads the source
  of about 70 of its modules into ``linecache`` (8 MiB of line strings);
  a traceback reads what it needs again.
* ``malloc_trim(0)``: what those frees left at the top of the heap.

Linux only (``/proc/self/smaps``, glibc); elsewhere each step does nothing.
``EXPERTD_KEEP_PAGES=1`` skips the whole release.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import linecache
import logging
import os
import sys

log = logging.getLogger("expertd.server")

#: ``madvise`` advice: drop this range's pages from the process (Linux's value).
MADV_DONTNEED = 4


def _libc():
    """The C library through ctypes, or ``None`` where there is none to load."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def clean_library_mappings(smaps_path: str = "/proc/self/smaps") -> list[tuple[int, int, int]]:
    """``(start, end, resident kB)`` of each private, read-only, file-backed mapping
    with resident pages and no private (anonymous) page, from ``smaps``."""
    found: list[tuple[int, int, int]] = []
    current = None
    fields: dict[str, int] = {}

    def close() -> None:
        if current is not None and fields.get("Rss", 0) > 0 and fields.get("Anonymous", 1) == 0 \
                and fields.get("Private_Dirty", 1) == 0 and fields.get("Shared_Dirty", 1) == 0:
            found.append((*current, fields["Rss"]))

    with open(smaps_path) as smaps:
        for line in smaps:
            head, _, rest = line.partition(" ")
            if "-" in head and not head.endswith(":"):
                close()
                parts = rest.split(None, 4)
                perms, path = parts[0], parts[4].strip() if len(parts) > 4 else ""
                current = None
                fields = {}
                if path.startswith("/") and perms[1] == "-" and perms[3] == "p":
                    start, _, end = head.partition("-")
                    current = (int(start, 16), int(end, 16))
            elif current is not None and head.endswith(":"):
                value = rest.split()
                if len(value) == 2 and value[1] == "kB":
                    fields[head[:-1]] = int(value[0])
    close()
    return found


def drop_clean_library_pages(smaps_path: str = "/proc/self/smaps") -> int:
    """Unmap the clean pages of read-only library mappings (see the module docstring);
    the kB of resident pages so handed back (0 where this is not Linux)."""
    if not sys.platform.startswith("linux") or not os.path.exists(smaps_path):
        return 0
    libc = _libc()
    madvise = getattr(libc, "madvise", None)
    if madvise is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    dropped = 0
    for start, end, resident_kb in clean_library_mappings(smaps_path):
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            dropped += resident_kb
    return dropped


def trim_heap() -> bool:
    """glibc's ``malloc_trim(0)``; False where it does not exist (musl, macOS)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


def release_after_start(environ: dict = os.environ) -> None:
    """Hand back what loading the experts left behind and serving does not use (see above)."""
    if environ.get("EXPERTD_KEEP_PAGES") == "1":
        return
    linecache.clearcache()
    trim_heap()
    dropped_kb = drop_clean_library_pages()
    log.info("handed back %.0f MiB of library pages only start-up used", dropped_kb / 1024)
