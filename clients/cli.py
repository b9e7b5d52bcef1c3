"""Small client commands: ``expertd call`` and ``expertd install-stage``."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import click

from clients import DEFAULT_ENDPOINT
from clients.wire import CallTimeout, RemoteError, ServerUnavailable, connect

STAGE_TEMPLATE = '''#!{python}
"""expert_{name}: pipe stage for the expertd expert {name!r} (made by `expertd install-stage`)."""
import sys

from clients.pipe import main

main(["{name}", *sys.argv[1:]])
'''


@click.command("call")
@click.argument("method")
@click.argument("args", nargs=-1)
@click.option("--endpoint", envvar="EXPERTD_ENDPOINT", default=DEFAULT_ENDPOINT,
              show_default=True, help="Server endpoint (env EXPERTD_ENDPOINT).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def call(method, args, endpoint, timeout):
    """Call METHOD with ARGS (each a JSON value) and print the JSON result.

    \b
      expertd call health
      expertd call sentiment '{"text": "I love it"}'
      expertd call opinions '{"text": "I love it"}' '["sentiment", "genre"]'
    """
    values = []
    for i, arg in enumerate(args, 1):
        try:
            values.append(json.loads(arg))
        except ValueError:
            raise click.UsageError(f"argument {i} is not JSON: {arg!r}") from None
    try:
        with connect(endpoint, timeout=timeout) as connection:
            result = connection.call(method, *values)
    except (ServerUnavailable, CallTimeout) as exc:
        click.echo(f"expertd call: {exc}", err=True)
        sys.exit(3)
    except RemoteError as exc:
        click.echo(f"expertd call: {exc.name}: {exc.msg}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


@click.command("install-stage")
@click.argument("names", nargs=-1, required=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: Path(sys.executable).parent, show_default="the venv's bin/",
              help="Where to write the scripts (a directory on PATH).")
def install_stage(names, directory):
    """Write an ``expert_<NAME>`` pipe stage for each NAME.

    A user who had ``expert_sentiment.py`` scripts keeps the name:
    ``cat doc.json | expert_sentiment | expert_genre``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not name.isidentifier():
            raise click.UsageError(f"expert name {name!r} must be an identifier")
        path = directory / f"expert_{name}"
        path.write_text(STAGE_TEMPLATE.format(python=sys.executable, name=name))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        click.echo(str(path))
    if str(directory) not in os.environ.get("PATH", "").split(os.pathsep):
        click.echo(f"note: {directory} is not on PATH", err=True)
