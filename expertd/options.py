"""The command-line options every command spells the same way: ``--endpoint`` and ``--bind``.

Each is written once here; the commands decorate with them (``@endpoint_option()``).
Both read ``EXPERTD_ENDPOINT`` and answer a malformed endpoint in one line, exit 2
(``expertd.endpoint.click_callback``).
"""

from __future__ import annotations

import click

from expertd.endpoint import click_callback
from expertd.spec import DEFAULT_ENDPOINT


def endpoint_option(help: str = "Server endpoint (env EXPERTD_ENDPOINT)."):
    """``--endpoint``: the server a client command talks to."""
    return click.option("--endpoint", envvar="EXPERTD_ENDPOINT", default=DEFAULT_ENDPOINT,
                        show_default=True, callback=click_callback(), help=help)


def bind_option(help: str = "ZeroMQ endpoint to listen on (env EXPERTD_ENDPOINT)."):
    """``--bind``: the endpoint a server listens on (a bindable endpoint: no host names)."""
    return click.option("--bind", envvar="EXPERTD_ENDPOINT", default=DEFAULT_ENDPOINT,
                        show_default=True, callback=click_callback(binding=True), help=help)
