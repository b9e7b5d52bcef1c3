"""``expertd``: one command, subcommands loaded only when used.

``expertd pipe`` must start in milliseconds, so nothing here imports the
server (or TensorFlow) unless ``serve`` is the subcommand being run.
"""

from __future__ import annotations

import importlib

import click

SUBCOMMANDS = {
    "serve": "rpc_server.cli:serve",
    "pipe": "clients.pipe:pipe",
    "call": "clients.cli:call",
    "install-stage": "clients.cli:install_stage",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are ``module:attribute`` strings, imported on use."""

    def list_commands(self, ctx):
        """All subcommand names, sorted."""
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        """Import the subcommand ``name`` (or ``None`` if there is none)."""
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="expertd")
def main():
    """expertd: serve Python ML experts to pipelines, scripts and web apps."""


if __name__ == "__main__":
    main()
