"""rpc_server/resident.py: which mappings are handed back, and that nothing written is lost."""

from __future__ import annotations

import linecache
import mmap
import os
import sys

import pytest

from expertd.rpc_server import resident

SMAPS = """\
7f0000000000-7f0000002000 r-xp 00000000 08:01 11 /lib/clean text.so
Rss:                   8 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
7f0000002000-7f0000003000 r--p 00002000 08:01 11 /lib/relocated.so
Rss:                   4 kB
Private_Dirty:         4 kB
Shared_Dirty:          0 kB
Anonymous:             4 kB
7f0000003000-7f0000004000 rw-p 00003000 08:01 11 /lib/data.so
Rss:                   4 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
7f0000004000-7f0000005000 r--s 00000000 08:01 12 /dev/shm/shared
Rss:                   4 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
7f0000005000-7f0000006000 r--p 00000000 00:00 0
Rss:                   4 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
7f0000006000-7f0000008000 r--p 00000000 08:01 13 /lib/untouched.so
Rss:                   0 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")


def test_only_clean_private_read_only_file_mappings_are_chosen(tmp_path):
    path = tmp_path / "smaps"
    path.write_text(SMAPS)
    assert resident.clean_library_mappings(str(path)) == [(0x7f0000000000, 0x7f0000002000, 8)]


def mapping_rss_kb(name: str) -> int:
    """Resident kB of this process's mappings of a file whose path ends with ``name``."""
    total, current = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):
                current = line.rstrip().endswith(name)
            elif current and head == "Rss:":
                total += int(line.split()[1])
    return total


@linux_only
def test_clean_pages_are_handed_back_and_written_ones_kept(tmp_path):
    pages = 64
    data = bytes(range(256)) * (pages * mmap.PAGESIZE // 256)
    clean_file = tmp_path / "clean-library.bin"
    clean_file.write_bytes(data)
    written_file = tmp_path / "written-library.bin"
    written_file.write_bytes(data)
    for path in (clean_file, written_file):  # written back: a dirty page-cache page is left alone
        with open(path, "rb") as file:
            os.fsync(file.fileno())
    with open(clean_file, "rb") as clean_f, open(written_file, "r+b") as written_f:
        clean = mmap.mmap(clean_f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        written = mmap.mmap(written_f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            assert clean[:] == data  # every page touched
            written[0:5] = b"kept!"  # a private copy of the first page
            assert mapping_rss_kb("clean-library.bin") == pages * mmap.PAGESIZE // 1024

            dropped = resident.drop_clean_library_pages()

            assert dropped >= pages * mmap.PAGESIZE // 1024
            assert mapping_rss_kb("clean-library.bin") == 0
            assert clean[:] == data  # mapped again from the page cache, unchanged
            assert written[0:5] == b"kept!" and written[5:] == data[5:]
        finally:
            clean.close()
            written.close()


def test_nothing_happens_where_this_is_not_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert resident.drop_clean_library_pages() == 0


def test_trim_heap_without_glibc(monkeypatch):
    monkeypatch.setattr(resident, "_libc", lambda: None)
    assert resident.trim_heap() is False


@linux_only
def test_release_clears_linecache_unless_told_to_keep(tmp_path):
    source = tmp_path / "some_module.py"
    source.write_text("x = 1\n")
    assert linecache.getline(str(source), 1) == "x = 1\n"
    resident.release_after_start({"EXPERTD_KEEP_PAGES": "1"})
    assert str(source) in linecache.cache
    resident.release_after_start({})
    assert str(source) not in linecache.cache
