"""What ``expertd pipe`` can be told, and the fast parser of its common command lines."""

from __future__ import annotations

import os

from expertd.clients import DEFAULT_ENDPOINT
from expertd.endpoint import EndpointError, parse_endpoint
from expertd.names import SEPARATOR, parse_ref


class PipeOptions:
    """Everything ``expertd pipe`` can be told; the CLI maps onto it one to one."""

    DEFAULTS = {
        "endpoint": DEFAULT_ENDPOINT,
        "mode": "auto",            # "auto", "lines" or "single"
        "timeout": 5.0,            # seconds to keep retrying an unreachable or busy server
        "call_timeout": 60.0,      # seconds to wait for one answer
        "batch_size": 1000,        # documents per request for JSON Lines (bench/RESULTS-stream-cpu.md)
        "connections": 2,          # connections a JSON Lines stream spreads its chunks over
        "autostart": False,        # start `expertd serve` when no server answers
        "autostart_timeout": 180.0,
        "config": None,            # experts file for --autostart
        "progress": None,          # None: when stderr is a terminal
    }

    def __init__(self, names, **values) -> None:
        """``names`` of the experts, then any of ``DEFAULTS`` by keyword."""
        unknown = set(values) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"unknown pipe options: {', '.join(sorted(unknown))}")
        self.names = tuple(dict.fromkeys(names))
        for key, default in self.DEFAULTS.items():
            setattr(self, key, values.get(key, default))

    def __eq__(self, other) -> bool:
        return isinstance(other, PipeOptions) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"PipeOptions({vars(self)!r})"


#: The fast parser's view of the command line: option -> (field, kind).
#: The click command (``clients.pipe_cli``) declares the same options for
#: --help and error messages; tests check that both parse alike.
FAST_OPTIONS = {
    "--lines": ("mode", "lines"), "--single": ("mode", "single"),
    "--autostart": ("autostart", True),
    "--progress": ("progress", True), "--no-progress": ("progress", False),
    "--endpoint": ("endpoint", str), "--config": ("config", str),
    "--timeout": ("timeout", float), "--call-timeout": ("call_timeout", float),
    "--batch-size": ("batch_size", int), "--connections": ("connections", int),
}

#: Integer options whose smallest value is 1 (the others' is 0).
AT_LEAST_ONE = ("batch_size", "connections")


def parse_fast(argv: list[str]) -> PipeOptions | None:
    """Parse the common command lines without click; ``None`` means "ask click".

    Anything unusual (help, an unknown option, a bad value, no names) goes to
    click, which explains it properly.
    """
    names: list[str] = []
    values: dict = {}
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            names.append(arg)
            continue
        if arg == "--":
            names.extend(args)
            break
        key, has_value, inline = arg.partition("=")
        spec = FAST_OPTIONS.get(key)
        if spec is None:
            return None
        field, kind = spec
        if isinstance(kind, type):
            raw = inline if has_value else next(args, None)
            if raw is None:
                return None
            try:
                value = kind(raw)
            except ValueError:
                return None
            if kind is not str and not value >= (1 if field in AT_LEAST_ONE else 0):
                return None  # also refuses nan
            values[field] = value
        elif has_value:
            return None
        else:
            values[field] = kind
    if not names:
        return None
    for name in names:
        if SEPARATOR in name:
            try:
                parse_ref(name)
            except ValueError:
                return None  # click says what is wrong with the name
    if "endpoint" not in values and os.environ.get("EXPERTD_ENDPOINT"):
        values["endpoint"] = os.environ["EXPERTD_ENDPOINT"]
    try:
        parse_endpoint(values.get("endpoint", DEFAULT_ENDPOINT))
    except EndpointError:
        return None  # click says what is wrong, and where it came from, in one line
    return PipeOptions(names, **values)
