"""``expertd pipe NAME [NAME ...]``: a pipeline stage that adds opinions to JSON.

Reads one JSON document, or JSON Lines, from stdin and writes each document to
stdout with ``opinions.<NAME>`` added by the warm expertd server. Nothing is
lost: every line read comes out, in order, either answered or unchanged. A
line that is not a JSON object, or that the server could not be asked about
(an integer beyond 64 bits, a lone surrogate, deep nesting, NaN), is written
through unchanged and reported on stderr with its line number; an expert's
failure is left under ``errors.<NAME>``; a busy, restarting or lost server is
asked again within ``--timeout``; and if no server answers, or a signal stops
the stage, every line not yet answered is written through unchanged.

The stage is started once per document in many pipelines, so it imports as
little as it can: no TensorFlow, no server code, not even zerorpc (it talks
through the lean ``clients.wire``), and no click for the common command lines.

Its parts: ``options`` (what it can be told), ``reading`` (stdin, parsing and
encoding each line), ``connecting`` (the connection and ``--autostart``),
``retrying`` (the catalogue's retry rule, backoff), ``pipelining`` (chunks in
flight, isolating refused documents), ``output`` (the ledger of lines not yet
written), ``stage`` (detection, signals, exit paths).

Exit status (from the error catalogue, ``expertd/protocol.json``): 0 every
document got every opinion; 1 some did not; 2 usage error (including an
unknown expert); 3 no server answered; 128+N stopped by signal N (130 SIGINT,
143 SIGTERM: every line read is written out first; see ``stage``), 141 stdout closed.
"""

from __future__ import annotations

import _signal  # not signal: its enums cost every stage ~1 ms
import sys

from expertd.clients import DEFAULT_ENDPOINT
from expertd.clients.pipe.options import FAST_OPTIONS, PipeOptions, parse_fast
from expertd.clients.pipe.reading import LineReader
from expertd.clients.pipe.stage import EXIT_OK, EXIT_PARTIAL, EXIT_UNREACHABLE, EXIT_USAGE, Stage, run

__all__ = ["DEFAULT_ENDPOINT", "EXIT_OK", "EXIT_PARTIAL", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "FAST_OPTIONS", "LineReader", "PipeOptions", "Stage", "exit_quickly", "main", "parse_fast",
           "run"]


def main(argv: list[str] | None = None, prog_name: str = "expertd-pipe") -> None:
    """Entry point of ``expertd pipe``, ``expertd-pipe`` and ``expert_<name>`` stages.

    The common command lines are parsed without importing click (which costs
    a stage more than its whole run); anything else goes to the click command.
    """
    argv = sys.argv[1:] if argv is None else argv
    options = parse_fast(argv)
    if options is None:
        from expertd.clients.pipe_cli import pipe

        pipe.main(args=argv, prog_name=prog_name)
        return
    try:
        status = run(options)
    except KeyboardInterrupt:  # Ctrl-C before the stage's own handler is set, or after it is gone
        sys.stderr.write("expertd pipe: stopped by SIGINT while starting or ending (no line "
                         "read was left unwritten)\n")
        status = 128 + _signal.SIGINT
    sys.exit(status)


def exit_quickly(code) -> None:
    """End the process as ``sys.exit(code)`` does, without the interpreter's shutdown when
    nothing needs it (the installed scripts call this as a stage ends).

    The shutdown (clearing every module, a last garbage collection) costs a one-document
    stage about 2 ms of CPU at every run (bench/RESULTS-startup.md). It is skipped when no
    exit handler can be registered (``atexit`` was never imported: OpenTelemetry's exporter,
    logging and ``weakref.finalize`` import it), no thread runs (``threading`` was never
    imported) and stdout and stderr flush cleanly; otherwise this is ``sys.exit(code)``.
    """
    if (code is None or isinstance(code, int)) and "atexit" not in sys.modules \
            and "threading" not in sys.modules:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - the interpreter's own shutdown then reports it, as ever
            pass
        else:
            import os

            os._exit(code or 0)
    sys.exit(code)
