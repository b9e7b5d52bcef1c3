"""``expertd db``: the PostgreSQL database that holds a shared feedback log and checkpoints."""

from __future__ import annotations

import sys

import click

URL_OPTION = click.option(
    "--url", envvar="EXPERTD_FEEDBACK_LOG", required=True, metavar="URL",
    help="The feedback log's database, postgresql://... (env EXPERTD_FEEDBACK_LOG).")


@click.group("db", short_help="Create or upgrade the feedback log's PostgreSQL schema.")
def db():
    """The PostgreSQL database of a shared feedback log (server.feedback_log).

    Servers create or upgrade the schema themselves when they start; these
    commands do it ahead of time (e.g. from a deploy step, with an owner role).
    """


@db.command("upgrade")
@URL_OPTION
def upgrade(url):
    """Create the schema, or migrate it to this expertd's version (idempotent)."""
    from expertd.rpc_server.feedback_pg import SCHEMA_VERSION, is_postgres_url, redacted
    from expertd.rpc_server.feedback_pg import upgrade as migrate

    if not is_postgres_url(url):
        click.echo("expertd db upgrade: --url must be a postgresql:// URL", err=True)
        sys.exit(2)
    import psycopg

    try:
        before, after = migrate(url)
    except psycopg.Error as exc:
        click.echo(f"expertd db upgrade: {redacted(url)}: {type(exc).__name__}: "
                   f"{str(exc).strip()}", err=True)
        sys.exit(1)
    except RuntimeError as exc:
        click.echo(f"expertd db upgrade: {exc}", err=True)
        sys.exit(1)
    if before == after:
        click.echo(f"{redacted(url)}: schema already at version {SCHEMA_VERSION}")
    else:
        click.echo(f"{redacted(url)}: schema upgraded from version {before} to {after}")
