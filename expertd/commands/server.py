"""``expertd status``, ``expertd stop`` and ``expertd reload``: a running server, administered.

They find the server by asking it (``health()``, through ``clients.probe``: the
clients' own connection, so it carries CURVE keys when they are configured) and
act on its processes through ``expertd.control``.
"""

from __future__ import annotations

import sys

import click

from expertd import control
from expertd.clients.commands import NO_SERVER
from expertd.clients.probe import health_probe
from expertd.options import endpoint_option


# -- expertd status ---------------------------------------------------------------------

@click.command("status", short_help="Say whether a server answers (exit 0, else 3).")
@endpoint_option()
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for an answer.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; only the exit status.")
def status(endpoint, timeout, quiet):
    """Say whether a server answers at the endpoint (exit 0), or not (exit 3)."""
    try:
        health = control.find_server(endpoint, health_probe, timeout).health
    except control.NoAnswer as exc:
        if not quiet:
            click.echo(f"no expertd server answers at {endpoint} ({exc})")
        sys.exit(NO_SERVER)
    if not quiet:
        click.echo(f"expertd {health.get('version', '?')} is {health.get('status', '?')} on "
                   f"{endpoint}: pid {health.get('pid', '?')}, up "
                   f"{_duration(health.get('uptime_s', 0))}, experts: "
                   f"{', '.join(health.get('experts', []))}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# -- expertd stop -----------------------------------------------------------------------

@click.command("stop", short_help="Stop the server: SIGTERM, then SIGKILL.")
@endpoint_option()
@click.option("--timeout", type=click.FloatRange(min=0), default=35.0, show_default=True,
              help="Seconds to let it finish in-flight calls (its --drain-timeout, 30 by "
                   "default, plus a margin) before it is killed.")
def stop(endpoint, timeout):
    """Stop the server at the endpoint: SIGTERM (it drains), then SIGKILL after --timeout.

    The server's pid comes from its health() answer; only a server on this
    machine (a loopback or local address, or ipc://) is signalled.
    """
    try:
        server = control.find_server(endpoint, health_probe, 15.0)
    except control.NoAnswer as exc:
        click.echo(f"expertd stop: no expertd server answers at {endpoint} ({exc}); nothing "
                   f"to stop", err=True)
        sys.exit(NO_SERVER)
    try:
        # With --workers, the supervisor (whose children would be restarted) is what stops.
        pid = control.local_pid(server)
        click.echo(f"stopping expertd (pid {pid}) on {endpoint}: SIGTERM, in-flight calls finish")
        killed = control.terminate([pid], timeout, on_kill=lambda _: click.echo(
            f"still running after {timeout:g} s: SIGKILL", err=True))
    except control.ControlError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("killed" if killed else "stopped")


# -- expertd reload ---------------------------------------------------------------------

@click.command("reload")
@endpoint_option("Endpoint of the server to reload (env EXPERTD_ENDPOINT).")
def reload(endpoint):
    """Reload a server started with --workers: new workers replace old ones one at a time."""
    try:
        server = control.find_server(endpoint, health_probe, 10.0)
    except control.NoAnswer as exc:
        raise click.ClickException(f"no expertd server answered at {endpoint} ({exc}); "
                                   f"is it running?") from None
    try:
        pid = control.reload(server)
    except control.ControlError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"asked the supervisor (pid {pid}) of {endpoint} to reload; "
               f"its log shows the progress")
