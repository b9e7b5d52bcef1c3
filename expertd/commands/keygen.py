"""``expertd keygen``: CurveZMQ key pairs for the server and its clients.

The layout (ZeroMQ's certificate format, as ``zmq.auth.create_certificates`` writes it)::

    keys/server.key              the server's public key: give it to every client
    keys/server.key_secret       the server's key pair: only the server reads it (0600)
    keys/clients/NAME.key_secret a client's key pair: give it to that client only (0600)
    keys/clients/NAME.key        that client's public key
    keys/authorized/NAME.key     the public keys the server accepts (--authorized-keys)

Directories are 0700 and secret files 0600. An existing key is never overwritten,
so running it again with a new ``--client`` adds a client to the same server.
The files are written by ``expertd.keys`` (which also reads them, for both sides).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from expertd.keys import SERVER, generate


@click.command("keygen")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("keys"), show_default=True, help="Where to write the keys.")
@click.option("--client", "clients", multiple=True, metavar="NAME",
              help="Make a key pair for client NAME and authorize it (repeatable).")
def keygen(directory, clients):
    """Write a CurveZMQ key pair for the server and one per --client, and authorize them.

    \b
      expertd keygen --dir keys --client pipeline --client bridge
      expertd serve --bind tcp://0.0.0.0:4242 \\
          --curve-secret-key keys/server.key_secret --authorized-keys keys/authorized
      export EXPERTD_SERVER_KEY=keys/server.key
      export EXPERTD_CLIENT_KEY=keys/clients/pipeline.key_secret

    Remove a client's file from keys/authorized to revoke it (no restart needed).
    """
    for name in clients:
        if not name or name != os.path.basename(name) or name.startswith("."):
            raise click.UsageError(f"client name {name!r} must be a plain file name")
        if name == SERVER:
            raise click.UsageError(f"client name {SERVER!r} is the server's")
    for line in generate(directory, list(clients)):
        click.echo(line)
    click.echo(f"\nserver: expertd serve --curve-secret-key {directory / 'server.key_secret'} "
               f"--authorized-keys {directory / 'authorized'}")
    for name in clients:
        click.echo(f"client {name}: EXPERTD_SERVER_KEY={directory / 'server.key'} "
                   f"EXPERTD_CLIENT_KEY={directory / 'clients' / (name + '.key_secret')}")
