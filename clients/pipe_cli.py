"""The click declaration of ``expertd pipe``: help, validation and error messages.

The stage's hot path parses its command line without click
(``clients.pipe.parse_fast``); this command is what ``expertd pipe --help``
shows and what handles every command line the fast parser passes on.
"""

from __future__ import annotations

import sys

import click

# Its parts, not the package: ``clients.pipe.main`` hands over to this command.
from expertd.clients.pipe.options import PipeOptions
from expertd.clients.pipe.stage import run
from expertd.options import endpoint_option
from expertd.names import SEPARATOR, parse_ref

D = PipeOptions.DEFAULTS


def options_from_cli(names, mode, endpoint, timeout, call_timeout, batch_size, connections,
                     autostart, config, progress) -> PipeOptions:
    """Map the click parameters one to one onto ``PipeOptions``."""
    return PipeOptions(names, endpoint=endpoint,
                       mode={None: "auto", True: "lines", False: "single"}[mode],
                       timeout=timeout, call_timeout=call_timeout, batch_size=batch_size,
                       connections=connections, autostart=autostart, config=config, progress=progress)


def checked_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Each NAME@VERSION as ``expertd.names`` parses it (a bad one is a usage error).

    A plain NAME goes to the server, which answers ``UnknownExpert`` with the names it runs.
    """
    for name in names:
        if SEPARATOR not in name:
            continue
        try:
            parse_ref(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="NAMES") from None
    return names


@click.command("pipe", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", nargs=-1, required=True, callback=lambda ctx, param, value: checked_names(value))
@click.option("--lines/--single", "mode", default=None,
              help="Input is JSON Lines / one (possibly multi-line) document. "
                   "Default: detected from the first line.")
@endpoint_option()
@click.option("--timeout", type=click.FloatRange(min=0), default=D["timeout"],
              show_default=True,
              help="Seconds to keep retrying an unreachable, overloaded or restarting server "
                   "before giving up (exit 3).")
@click.option("--call-timeout", type=click.FloatRange(min=0), default=D["call_timeout"],
              show_default=True, help="Seconds to wait for one answer.")
@click.option("--batch-size", type=click.IntRange(min=1), default=D["batch_size"],
              show_default=True, help="Documents per request for JSON Lines.")
@click.option("--connections", type=click.IntRange(min=1), default=D["connections"],
              show_default=True,
              help="Connections a JSON Lines stream spreads its requests over (opened only "
                   "once more than one request is in flight; each lands on another worker "
                   "of `expertd serve --workers N` when it can). 1: one connection.")
@click.option("--autostart", is_flag=True,
              help="If no server answers, start `expertd serve` in the background and wait.")
@click.option("--config", type=str, default=None, help="Experts file for --autostart.")
@click.option("--progress/--no-progress", default=None,
              help="Show count and rate on stderr. Default: when stderr is a terminal.")
def pipe(**params):
    """Add the opinions of experts NAMES to JSON documents from stdin.

    \b
      echo '{"text": "I love it"}' | expertd pipe sentiment genre
      expertd pipe --lines sentiment < docs.jsonl > opinions.jsonl

    Every line read comes out, in order: answered, or unchanged with a
    warning on stderr naming its line (not JSON, not an object, or a document
    the server cannot be asked about).

    Exit status: 0 all opinions added; 1 some missing (see stderr and
    errors.<NAME>); 2 usage error; 3 no server answered (lines are written
    through unchanged); 128+N stopped by signal N.
    """
    sys.exit(run(options_from_cli(**params)))
