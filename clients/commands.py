"""Client commands for the shell: call, list, info, install-stage.

In the spirit of python-fire, ``expertd call`` turns the server's own methods
into a command line: plain words are strings, anything that parses as JSON is
that JSON value, and ``--FIELD VALUE`` flags build the document a method
takes (``expertd call sentiment --text "I love it"``). The help for a method
(``expertd call METHOD --help``), ``expertd list`` and ``expertd info`` come
from the server's own signatures and docstrings (``_zerorpc_inspect``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import click

from expertd.clients.wire import CallTimeout, RemoteError, ServerUnavailable, connect
from expertd.endpoint import EndpointError, exit_usage, parse_endpoint
from expertd.options import endpoint_option
from expertd.clients.pipe.retrying import what_to_do
from expertd.spec import METHOD, exit_code

STAGE_TEMPLATE = '''#!{python}
"""expert_{name}: pipe stage for the expertd expert {name!r} (made by `expertd install-stage`)."""
import sys

from expertd.clients.pipe import main

main(["{name}", *sys.argv[1:]])
'''

#: Exit status when no server answers (as the pipe stage's).
NO_SERVER = 3

def _no_server(command: str, endpoint: str, exc: Exception) -> None:
    click.echo(f"expertd {command}: no expertd server answered at {endpoint} ({exc}). Start one "
               f"with `expertd serve --bind {endpoint}` (or `make run`).", err=True)
    sys.exit(NO_SERVER)


def _ask(command: str, endpoint: str, timeout: float, *calls: tuple) -> list:
    """Make ``calls`` (``(method, *args)`` tuples) on one connection; exit clearly on failure."""
    try:
        with connect(endpoint, timeout=timeout) as connection:
            return [connection.call(*c) for c in calls]
    except (ServerUnavailable, CallTimeout) as exc:
        _no_server(command, endpoint, exc)
    except RemoteError as exc:
        # The exit status is the error catalogue's (expertd/protocol.json), as the pipe's.
        click.echo(f"expertd {command}: {exc.name}: {exc.msg}; {what_to_do(exc.name)}", err=True)
        sys.exit(exit_code(exc.name))


# -- expertd call -------------------------------------------------------------------

def parse_value(word: str) -> Any:
    """A command-line word as a value: JSON if it parses as JSON, else the word as a string."""
    try:
        return json.loads(word)
    except ValueError:
        return word


def split_words(words: tuple[str, ...]) -> tuple[list[Any], dict[str, Any], bool]:
    """Positional values, the document built from ``--FIELD VALUE`` flags, and whether --help was asked."""
    values: list[Any] = []
    doc: dict[str, Any] = {}
    wants_help = False
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-h", "--help"):
            wants_help = True
        elif word == "--":
            values.extend(parse_value(w) for w in words[i + 1:])
            break
        elif word.startswith("--") and len(word) > 2:
            key, sep, value = word[2:].partition("=")
            if not sep:
                if i + 1 >= len(words):
                    raise click.UsageError(f"flag --{key} needs a value (a document field)")
                i += 1
                value = words[i]
            doc[key] = parse_value(value)
        else:
            values.append(parse_value(word))
        i += 1
    return values, doc, wants_help


def place_document(method: str, params: list[str] | None, values: list[Any],
                   doc: dict) -> list[Any]:
    """Put the flag-built ``doc`` where the method takes its ``doc`` (or ``docs``) argument."""
    if not doc:
        return values
    if params is None:
        raise click.UsageError("--FIELD flags build a document, but the server did not say "
                               "which argument takes it; pass the document as JSON instead")
    for slot, wrap in (("doc", False), ("docs", True)):
        if slot in params:
            index = params.index(slot)
            if index > len(values):
                missing = ", ".join(params[len(values):index])
                raise click.UsageError(f"give {missing} before the --FIELD flags")
            return [*values[:index], [doc] if wrap else doc, *values[index:]]
    raise click.UsageError(f"{method} takes no document (its arguments: "
                           f"{', '.join(params) or 'none'}); --FIELD flags build one")


def _own_options(words: tuple[str, ...], endpoint: str, timeout: float) -> tuple:
    """Take ``--endpoint`` and ``--timeout`` out of the words after METHOD (they are ours)."""
    rest: list[str] = []
    i = 0
    while i < len(words):
        key, sep, value = words[i].partition("=")
        if key in ("--endpoint", "--timeout"):
            if not sep:
                if i + 1 >= len(words):
                    raise click.UsageError(f"{key} needs a value")
                i += 1
                value = words[i]
            if key == "--endpoint":
                try:
                    parse_endpoint(value)
                except EndpointError as exc:
                    exit_usage(f"expertd call: {exc}")
                endpoint = value
            else:
                try:
                    timeout = float(value)
                except ValueError:
                    raise click.UsageError(f"--timeout must be a number, got {value!r}") from None
        else:
            rest.append(words[i])
        i += 1
    return tuple(rest), endpoint, timeout


def _method_help(method: str, described: dict | None) -> str:
    if described is None:
        return f"the server has no method {method!r}; `expertd list` shows what it has"
    params = [a["name"] for a in described.get("args") or []]
    usage = " ".join(params)
    lines = [f"Usage: expertd call {method} {usage}".rstrip()]
    if "doc" in params or "docs" in params:
        others = [p for p in params if p not in ("doc", "docs")]
        lines.append(" ".join(["   or: expertd call", method, *others, "--FIELD VALUE ..."]))
    lines += ["", plain(described.get("doc")) or "(no description)"]
    return "\n".join(lines)


@click.command("call", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False},
               add_help_option=False)
@click.argument("method", required=False)
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@endpoint_option()
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the answer.")
@click.option("-h", "--help", "wants_help", is_flag=True, help="Show this message and exit.")
@click.pass_context
def call(ctx, method, words, endpoint, timeout, wants_help):
    """Call METHOD on the server and print its JSON result.

    Each word is a JSON value if it parses as JSON, else a plain string.
    Flags --FIELD VALUE build the document the method takes (values as
    words are). `expertd call METHOD --help` shows the server's own help
    for METHOD; `expertd list` shows every method.

    \b
      expertd call health
      expertd call sentiment --text "I love it"
      expertd call opinion sentiment '{"text": "I love it"}'
      expertd call opinions '{"text": "I love it"}' '["sentiment", "genre"]'
    """
    words, endpoint, timeout = _own_options(words, endpoint, timeout)
    values, doc, help_in_words = split_words(words)
    if method is None or method in ("-h", "--help"):
        click.echo(ctx.get_help())
        return
    if wants_help or help_in_words:
        (described,) = _ask("call", endpoint, min(timeout, 10.0), ("_zerorpc_inspect",))
        click.echo(_method_help(method, described["methods"].get(method)))
        return
    if doc:
        (described,) = _ask("call", endpoint, timeout, ("_zerorpc_inspect",))
        entry = described["methods"].get(method)
        if entry is None:  # let the server say there is no such method
            values = [*values, doc]
        else:
            params = None if entry.get("args") is None else [a["name"] for a in entry["args"]]
            values = place_document(method, params, values, doc)
    (result,) = _ask("call", endpoint, timeout, (method, *values))
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


# -- expertd list / info ---------------------------------------------------------------

def _signature(name: str, described: dict) -> str:
    args = described.get("args")
    if args is None:
        return f"{name}(...)"
    return f"{name}({', '.join(a['name'] for a in args)})"


def plain(text: str | None) -> str:
    """A docstring for a terminal: RST literals (````x````) and click's ``\\b`` markers removed."""
    text = re.sub(r"``([^`]+)``", r"\1", text or "")
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b")


def _first_line(text: str | None) -> str:
    text = plain(text).strip()
    return text.splitlines()[0] if text else ""


@click.command("list", short_help="List the server's experts and methods.")
@endpoint_option()
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the server.")
def list_experts(endpoint, timeout):
    """List the server's experts and RPC methods, from its own descriptions."""
    experts, described = _ask("list", endpoint, timeout, (METHOD.experts,), ("_zerorpc_inspect",))
    names = {e["name"] for e in experts}
    click.echo(f"Experts on {endpoint} (`expertd info NAME` for one):")
    width = max((len(e["name"]) for e in experts), default=0)
    vwidth = max((len(str(e.get("version", "?"))) + 1 for e in experts), default=0)
    for entry in experts:
        version = f"v{entry.get('version', '?')}"
        reads = repr(entry.get("field", "text")) if entry.get("field", "text") is not None else "document"
        click.echo(f"  {entry['name']:<{width}}  {version:<{vwidth}}  reads "
                   f"{reads}  {_first_line(entry.get('description'))}")
    methods = {n: d for n, d in described["methods"].items() if n not in names}
    click.echo("\nMethods (`expertd call METHOD --help` for one):")
    shown = {n: _signature(n, d) for n, d in methods.items()}
    width = max(map(len, shown.values())) if shown else 0
    for name in sorted(methods):
        click.echo(f"  {shown[name]:<{width}}  {_first_line(methods[name].get('doc'))}")


def opinion_shape(value: Any) -> Any:
    """The JSON type of each part of an opinion: ``{"valence": "number", ...}``."""
    if isinstance(value, dict):
        return {k: opinion_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [opinion_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


SAMPLE_TEXT = "expertd info: a short sample text"


@click.command("info", short_help="Describe expert NAME: field, opinion, metrics.")
@click.argument("name")
@endpoint_option()
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the server (and for the sample opinion).")
def info(name, endpoint, timeout):
    """Describe expert NAME: description, field, opinion shape, metrics, batching.

    The opinion's shape is read from the expert's answer to a short sample
    text (skipped if it does not answer within --timeout).
    """
    experts, described = _ask("info", endpoint, timeout, (METHOD.experts,), ("_zerorpc_inspect",))
    entry = next((e for e in experts if e["name"] == name), None)
    if entry is None:
        click.echo(f"expertd info: the server at {endpoint} has no expert {name!r}; it runs: "
                   f"{', '.join(e['name'] for e in experts)}", err=True)
        sys.exit(2)
    field = entry.get("field", "text")
    click.echo(f"{name} (version {entry.get('version', '?')})")
    click.echo(f"  {entry.get('description') or '(no description)'}")
    click.echo(f"  reads:    the {field!r} field of a JSON-object document" if field is not None
               else "  reads:    the whole JSON-object document")
    needs = entry.get("needs") or {}
    if needs:
        click.echo("  needs:    " + ", ".join(f"{dep} (as {key!r})" for dep, key in needs.items())
                   + "; asked first, unless the document carries their opinions")
    method = described["methods"].get(name)
    if method is not None:
        click.echo(f"  call:     expertd call {name} --{field or 'text'} VALUE   "
                   f"(RPC: {_signature(name, method)})")
    batch = entry.get("batch") or {}
    if batch:
        click.echo(f"  batching: up to {batch.get('max_size')} documents per model call, "
                   f"waiting up to {batch.get('max_wait_ms', 0):g} ms for more")
    shape = _sample_shape(endpoint, name, field, timeout)
    click.echo(f"  opinion:  {json.dumps(shape) if shape is not None else '(no sample answer)'}")
    metrics = entry.get("metrics") or {}
    if metrics:
        click.echo("  metrics:")
        for key, value in metrics.items():
            click.echo(f"    {key}: {json.dumps(value, ensure_ascii=False)}")
    else:
        click.echo("  metrics:  (none reported)")


def _sample_shape(endpoint: str, name: str, field: str, timeout: float) -> Any:
    try:
        with connect(endpoint, timeout=timeout) as connection:
            return opinion_shape(connection.call(name, {field or "text": SAMPLE_TEXT}))
    except (ServerUnavailable, CallTimeout, RemoteError):
        return None


# -- expertd install-stage ---------------------------------------------------------------

@click.command("install-stage")
@click.argument("names", nargs=-1, required=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: Path(sys.executable).parent, show_default="the venv's bin/",
              help="Where to write the scripts (a directory on PATH).")
@endpoint_option()
def install_stage(names, directory, endpoint):
    """Write an expert_NAME pipe stage for each NAME.

    A user who had expert_sentiment.py scripts keeps the name:
    cat doc.json | expert_sentiment | expert_genre. If a server answers at
    the endpoint, names it does not run are refused; if none answers, the
    stages are written with a warning.
    """
    for name in names:
        if not name.isidentifier():
            raise click.UsageError(f"expert name {name!r} must be an identifier")
    try:
        with connect(endpoint, timeout=2.0) as connection:
            served = connection.call(METHOD.health).get("experts", [])
    except (ServerUnavailable, CallTimeout):
        click.echo(f"warning: no server answers at {endpoint}, so the names were not checked",
                   err=True)
    else:
        unknown = [n for n in names if n not in served]
        if unknown:
            raise click.UsageError(f"the server at {endpoint} has no expert "
                                   f"{', '.join(map(repr, unknown))}; it runs: "
                                   f"{', '.join(served)}")
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / f"expert_{name}"
        path.write_text(STAGE_TEMPLATE.format(python=sys.executable, name=name))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        click.echo(str(path))
    if str(directory) not in os.environ.get("PATH", "").split(os.pathsep):
        click.echo(f"note: {directory} is not on PATH", err=True)
