"""``expertd models train``: make the default experts' models where the packaged defaults read them.

The same steps as ``make models`` in the repository: fetch VADER's human-rated
sentences (from the vadersentiment sdist the package registry serves, with pip),
train the sentiment and genre models (``python -m expertd.experts.train``), and
measure consensus on the held-out split (``python -m expertd.experts.consensus
--evaluate``). Needs ``pip install 'expertd[models]'``; about a minute on 2 cores.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import click


@click.group("models", short_help="Make the default experts' models (expertd models train).")
def models():
    """The default experts' models: where they live and how to make them."""


def steps(models_dir: Path, data_dir: Path, force: bool) -> list[list[str]]:
    """The commands ``train`` runs, in order."""
    python = sys.executable
    return [
        [python, "-m", "expertd.experts.data", "--data-dir", str(data_dir)],
        [python, "-m", "expertd.experts.train", "--data-dir", str(data_dir), "--out", str(models_dir),
         *(["--force"] if force else [])],
        [python, "-m", "expertd.experts.consensus", "--evaluate", "--data-dir", str(data_dir),
         "--models", str(models_dir)],
    ]


@models.command("train")
@click.option("--dir", "models_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the models. Default: $EXPERTD_MODELS, else models/ in a checkout "
                   "of the repository, else ~/.local/share/expertd/models (where `include: [default]` "
                   "reads them).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the training data is cached. Default: $EXPERTD_DATA, else data/ in a "
                   "checkout, else ~/.local/share/expertd/data.")
@click.option("--force", is_flag=True, help="Train again models that are already there.")
@click.option("--dry-run", is_flag=True, help="Print the steps, run nothing.")
def train(models_dir, data_dir, force, dry_run):
    """Fetch the training data, train the sentiment and genre models, measure consensus."""
    from expertd.paths import data_dir as default_data_dir
    from expertd.paths import models_dir as default_models_dir

    models_dir = models_dir or default_models_dir()
    data_dir = data_dir or default_data_dir()
    commands = steps(models_dir, data_dir, force)
    if dry_run:
        click.echo(f"models into {models_dir}, training data cached in {data_dir}:")
        for command in commands:
            click.echo("  " + shlex.join(command))
        return
    missing = [name for name in ("tensorflow", "vaderSentiment") if importlib.util.find_spec(name) is None]
    if missing:
        click.echo(f"expertd models train: {', '.join(missing)} not installed here; "
                   f"pip install 'expertd[models]' first", err=True)
        sys.exit(2)
    for command in commands:
        done = subprocess.run(command)
        if done.returncode != 0:
            click.echo(f"expertd models train: this step failed (exit {done.returncode}): "
                       f"{shlex.join(command)}", err=True)
            sys.exit(1)
    click.echo(f"the default experts' models are in {models_dir}")
    if models_dir != default_models_dir():
        click.echo(f"(set EXPERTD_MODELS={models_dir} for `include: [default]` to read them there)")
