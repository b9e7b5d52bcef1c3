"""``expertd state``: what experts that learn keep (where, how much), and starting one afresh."""

from __future__ import annotations

import sys
from pathlib import Path

import click

CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="EXPERTD_CONFIG", default=None,
    help="Experts file (YAML); its state_dir holds the state. Default: config/experts.yaml "
         "(env EXPERTD_CONFIG).")


@click.group("state", short_help="Show or reset what experts that learn have learned.")
def state():
    """What experts that learn keep: a feedback log and checkpoints in the experts file's
    state_dir (default: state/ beside the experts file)."""


def _learners(config_path: Path | None):
    """The experts file, and its experts that learn (constructed, not loaded)."""
    from expertd.experts.config import ConfigError, build_experts, ensure_cwd_importable, load_config

    ensure_cwd_importable()
    try:
        file = load_config(config_path)
        experts = build_experts(file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return file, [name for name, expert in experts.items() if expert.learns]


@state.command("show")
@CONFIG_OPTION
def show(config_path):
    """Where each expert that learns keeps its state, and how much it holds."""
    from expertd.rpc_server.learning import learned_state

    file, learners = _learners(config_path)
    click.echo(f"state_dir: {file.server.state_dir}")
    if not learners:
        click.echo("  (no expert in this file learns)")
    for name in learners:
        held = learned_state(Path(file.server.state_dir), name, file.server.feedback_log)
        click.echo(f"  {name}: {held['examples']} examples in {held['log']}; checkpoint: "
                   f"{held['checkpoint'] or 'none'}")


@state.command("reset")
@click.argument("name")
@CONFIG_OPTION
def reset(name, config_path):
    """Start expert NAME afresh: forget its examples in the feedback log and its checkpoint.

    Refused (exit 1) while a server learns from the same state_dir: stop it first.
    """
    from expertd.rpc_server.learning import StateInUse, reset_learner

    file, learners = _learners(config_path)
    if name not in learners:
        known = {spec.name for spec in file.experts}
        what = "does not learn" if name in known else f"is not in {file.path}"
        click.echo(f"expertd state reset: expert {name!r} {what}; experts that learn: "
                   f"{', '.join(learners) or 'none'}", err=True)
        sys.exit(2)
    try:
        removed = reset_learner(Path(file.server.state_dir), name, file.server.feedback_log)
    except StateInUse as exc:
        click.echo(f"expertd state reset: {exc}", err=True)
        sys.exit(1)
    checkpoint = f"its checkpoint {removed['checkpoint']}" if removed["checkpoint"] else "no checkpoint"
    click.echo(f"expert {name!r} starts afresh: removed {removed['examples']} examples from the "
               f"feedback log and {checkpoint} (state_dir {file.server.state_dir})")
