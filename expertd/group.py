"""The ``expertd`` click group: subcommands are imported only when used."""

from __future__ import annotations

import importlib

import click

from importlib.metadata import version

SUBCOMMANDS = {
    "serve": "expertd.rpc_server.commands:serve",
    "check": "expertd.rpc_server.commands:check",
    "status": "expertd.commands.server:status",
    "stop": "expertd.commands.server:stop",
    "list": "expertd.clients.commands:list_experts",
    "info": "expertd.clients.commands:info",
    "pipe": "expertd.clients.pipe_cli:pipe",
    "learn": "expertd.clients.learn:learn",
    "call": "expertd.clients.commands:call",
    "install-stage": "expertd.clients.commands:install_stage",
    "reload": "expertd.commands.server:reload",
    "keygen": "expertd.commands.keygen:keygen",
    "init": "expertd.commands.init:init",
    "state": "expertd.commands.state:state",
    "models": "expertd.commands.models:models",
    "db": "expertd.commands.db:db",
    "expert": "expertd.clients.versions_cli:expert",
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
@click.version_option(version("expertd"), prog_name="expertd")
def cli():
    """expertd: serve Python ML experts to pipelines, scripts and web apps."""
