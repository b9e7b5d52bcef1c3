"""``clients.pipe.exit_quickly``: the status and the output of ``sys.exit``, without the
interpreter's shutdown unless something needs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import sys
{before}
class Finalized:
    def __del__(self):
        sys.stderr.write("shut down\\n")

kept = Finalized()
sys.stdout.write("written")  # buffered: flushed before the process ends
from expertd.clients.pipe import exit_quickly
exit_quickly({code})
"""


def run(code: str, before: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM.format(code=code, before=before)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("None", 0), ("3", 3), ("141", 141)])
def test_the_status_and_the_buffered_output_without_the_shutdown(code, status):
    done = run(code)
    assert (done.returncode, done.stdout) == (status, "written")
    assert "shut down" not in done.stderr  # the interpreter's shutdown was skipped


@pytest.mark.parametrize("before", ["import atexit\natexit.register(print, ' and the handler')",
                                   "import threading"])
def test_an_exit_handler_or_threads_get_the_interpreter_s_shutdown(before):
    done = run("2", before)
    assert done.returncode == 2 and done.stdout.startswith("written")
    assert "shut down" in done.stderr
    if "atexit" in before:
        assert done.stdout == "written and the handler\n"


def test_a_message_exits_as_sys_exit_does():
    done = run("'no server'")
    assert done.returncode == 1 and done.stderr.startswith("no server")
