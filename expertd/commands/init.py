"""``expertd init DIR``: write a small project that serves and answers as written."""

from __future__ import annotations

import importlib.util
import sys
from importlib.resources import files
from pathlib import Path

import click

#: The files of a new project, copied from the package (expertd/scaffold/).
FILES = ("experts.yaml", "my_experts.py", "examples.tsv", "documents.jsonl", "README.md")

TONE_ENTRY = """\
  tone:
    expert: my_experts:Tone
    options: {examples_path: examples.tsv}
"""
TONE_WITHOUT_TENSORFLOW = """\
  # tone needs TensorFlow, which is not installed here: pip install 'expertd[models]',
  # then uncomment these three lines.
  # tone:
  #   expert: my_experts:Tone
  #   options: {examples_path: examples.tsv}
"""


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported here (without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None


@click.command("init", short_help="Write a small expertd project into DIR.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keras/--no-keras", default=None,
              help="Serve the Keras expert `tone` (default: when TensorFlow is installed).")
def init(directory: Path, keras: bool | None) -> None:
    """Write a small project into DIR: an experts file, a module with two experts
    (a plain function and a Keras model), sample documents and a README.

    DIR must not exist or be empty. Then, from anywhere:
    expertd serve --config DIR/experts.yaml
    """
    if directory.exists() and any(directory.iterdir()):
        click.echo(f"expertd init: {directory} is not empty; give a new or empty folder "
                   f"(nothing was written)", err=True)
        sys.exit(2)
    keras = tensorflow_installed() if keras is None else keras
    directory.mkdir(parents=True, exist_ok=True)
    source = files("expertd") / "scaffold"
    for name in FILES:
        text = (source / name).read_text(encoding="utf-8")
        if name == "experts.yaml" and not keras:
            text = text.replace(TONE_ENTRY, TONE_WITHOUT_TENSORFLOW)
        (directory / name).write_text(text, encoding="utf-8")
    config = directory / "experts.yaml"
    names = "mine tone" if keras else "mine"
    click.echo(f"Wrote {directory}/: {', '.join(FILES)}")
    if not keras:
        click.echo("TensorFlow is not installed here: the Keras expert `tone` is written but "
                   "commented out in experts.yaml (pip install 'expertd[models]' to serve it).")
    click.echo(f"Next:\n  expertd serve --config {config} &\n"
               f"  expertd pipe {names} < {directory / 'documents.jsonl'}")
