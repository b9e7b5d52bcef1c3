"""The fast command-line parser of the pipe stage agrees with its click declaration."""

from __future__ import annotations

import click
import pytest

from expertd.clients.pipe import PipeOptions, parse_fast
from expertd.clients.pipe_cli import options_from_cli, pipe


def click_parse(argv):
    """What the click command makes of ``argv``."""
    ctx = pipe.make_context("expertd pipe", list(argv))
    return options_from_cli(**ctx.params)


@pytest.mark.parametrize("argv", [
    ["sentiment"],
    ["sentiment", "genre", "sentiment"],
    ["--lines", "sentiment"],
    ["sentiment", "--single"],
    ["--endpoint", "tcp://127.0.0.1:9", "--timeout", "0.5", "vader"],
    ["--endpoint=ipc:///tmp/x", "--call-timeout=3", "--batch-size", "10", "vader"],
    ["--connections", "4", "--lines", "vader"], ["--connections=1", "vader"],
    ["--autostart", "--config", "my.yaml", "--no-progress", "vader"],
    ["--progress", "vader", "--", "--odd-name"],
])
def test_fast_parser_matches_click(argv, monkeypatch):
    monkeypatch.delenv("EXPERTD_ENDPOINT", raising=False)
    assert parse_fast(argv) == click_parse(argv)


def test_endpoint_from_environment(monkeypatch):
    monkeypatch.setenv("EXPERTD_ENDPOINT", "tcp://127.0.0.1:5555")
    assert parse_fast(["vader"]).endpoint == click_parse(["vader"]).endpoint == \
        "tcp://127.0.0.1:5555"


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h", "vader"], ["--batch-size", "0", "vader"], ["--timeout", "x", "v"],
    ["--connections", "0", "vader"], ["--connections", "two", "vader"],
    ["--unknown", "vader"], ["--lines=yes", "vader"], ["vader", "--endpoint"],
])
def test_unusual_command_lines_go_to_click(argv):
    assert parse_fast(argv) is None


def test_every_click_option_is_known_to_the_fast_parser():
    from expertd.clients.pipe import FAST_OPTIONS

    declared = {opt for p in pipe.params if isinstance(p, click.Option)
                for opt in p.opts + p.secondary_opts if opt not in ("-h", "--help")}
    assert declared == set(FAST_OPTIONS)
    assert set(PipeOptions.DEFAULTS) - {"autostart_timeout"} == {
        p.name if p.name != "mode" else "mode" for p in pipe.params
        if isinstance(p, click.Option)}
