"""``--endpoint`` and ``--bind`` are spelled once (expertd/options.py) and behave alike everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from expertd.options import bind_option, endpoint_option

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = ("expertd", "clients", "rpc_server", "experts")


def test_the_endpoint_options_are_spelled_only_in_options_py():
    spelled = re.compile(r"""click\.option\(\s*["']--(endpoint|bind)["']""")
    places = [str(path.relative_to(ROOT)) for folder in PRODUCT
              for path in (ROOT / folder).rglob("*.py")
              if spelled.search(path.read_text())]
    assert places == ["expertd/options.py"]


def _command(option):
    @click.command()
    @option()
    def show(**values):
        click.echo(next(iter(values.values())))
    return show


def test_endpoint_option_reads_the_environment_and_refuses_a_malformed_value():
    runner = CliRunner()
    ok = runner.invoke(_command(endpoint_option), [], env={"EXPERTD_ENDPOINT": "tcp://127.0.0.1:5000"})
    assert ok.exit_code == 0 and ok.output.strip() == "tcp://127.0.0.1:5000"
    bad = runner.invoke(_command(endpoint_option), ["--endpoint", "localhost:4242"])
    assert bad.exit_code == 2 and "did you mean tcp://localhost:4242" in bad.output


def test_bind_option_takes_every_interface_where_endpoint_option_refuses_it():
    runner = CliRunner()
    assert runner.invoke(_command(bind_option), ["--bind", "tcp://*:4242"]).exit_code == 0
    assert runner.invoke(_command(endpoint_option), ["--endpoint", "tcp://*:4242"]).exit_code == 2


def test_the_options_are_always_called():
    # ``@endpoint_option`` without ``()`` decorates with the factory itself: the command
    # silently has no --endpoint (expertd expert load had none after the move).
    bare = re.compile(r"^@(endpoint|bind)_option\s*$", re.M)
    places = [str(path.relative_to(ROOT)) for folder in PRODUCT
              for path in (ROOT / folder).rglob("*.py") if bare.search(path.read_text())]
    assert places == []
