"""``expertd expert load|unload|promote|rollback``: one expert's versions, changed live.

Each command calls the admin method of the same name (``expert_load`` ...,
``rpc_server.live_versions``) once, then asks ``health()`` over fresh
connections until every worker reports the change (``served_versions``), so
the command returns when the whole server serves it. See docs/versions.md.
"""

from __future__ import annotations

import sys
import time

import click

from expertd.clients.commands import NO_SERVER
from expertd.options import endpoint_option
from expertd.clients.wire import CallTimeout, RemoteError, ServerUnavailable, connect
from expertd.spec import METHOD, exit_code

_timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
    help="Seconds to wait for the change to reach every worker (a load reads a model).")


@click.group("expert", context_settings={"help_option_names": ["-h", "--help"]})
def expert():
    """Load, unload, promote or roll back one version of an expert on a running server."""


@expert.command("load")
@click.argument("name")
@click.argument("version")
@endpoint_option()
@_timeout_option
def load(name, version, endpoint, timeout):
    """Load VERSION (the folder models/NAME/VERSION/) of expert NAME beside the served ones."""
    result = _call(endpoint, timeout, METHOD.expert_load, (name, version))
    wanted = _number(version)
    _wait(endpoint, timeout, name, lambda served: wanted in served["versions"])
    _say(result, f"loaded {name} version {wanted}")


@expert.command("unload")
@click.argument("name")
@click.argument("version")
@endpoint_option()
@_timeout_option
def unload(name, version, endpoint, timeout):
    """Stop serving VERSION of expert NAME (not its default: promote another first)."""
    before = _call(endpoint, timeout, METHOD.health, ())
    result = _call(endpoint, timeout, METHOD.expert_unload, (name, version))
    gone = set((before.get("served_versions") or {}).get(name, {}).get("versions", [])) - set(
        result["versions"])
    _wait(endpoint, timeout, name, lambda served: not gone & set(served["versions"]))
    _say(result, f"unloaded {name} version {', '.join(sorted(gone)) or version}")


@expert.command("promote")
@click.argument("name")
@click.argument("version")
@endpoint_option()
@_timeout_option
def promote(name, version, endpoint, timeout):
    """Make VERSION (a number or a label) the one that calls naming only NAME get."""
    result = _call(endpoint, timeout, METHOD.expert_promote, (name, version))
    _wait(endpoint, timeout, name, lambda served: served["default"] == result["default"])
    _say(result, f"promoted {name} version {result['default']}")


@expert.command("rollback")
@click.argument("name")
@endpoint_option()
@_timeout_option
def rollback(name, endpoint, timeout):
    """Make the default of NAME the version before the last promote again."""
    result = _call(endpoint, timeout, METHOD.expert_rollback, (name,))
    _wait(endpoint, timeout, name, lambda served: served["default"] == result["default"])
    _say(result, f"rolled {name} back to version {result['default']}")


@expert.command("shadow")
@click.argument("name")
@click.argument("version")
@endpoint_option()
@_timeout_option
def shadow(name, version, endpoint, timeout):
    """Run VERSION beside the default on every call, off the callers' path, and measure how
    much they agree (`off`: stop)."""
    wanted = None if version == "off" else version
    result = _call(endpoint, timeout, METHOD.expert_policy, (name, {"shadow": wanted}))
    _wait(endpoint, timeout, name, lambda served: served.get("shadow") == result["shadow"])
    _say(result, f"{name}: shadow {result['shadow'] or 'off'}")


@expert.command("canary")
@click.argument("name")
@click.argument("version")
@click.argument("share", type=click.FloatRange(0, 1), required=False)
@click.option("--sticky", default="none", show_default=True,
              help="document: the same input always gets the same version; field:NAME: the same "
                   "value of the documents' field NAME (e.g. a caller's id) does; none: drawn "
                   "per document.")
@endpoint_option()
@_timeout_option
def canary(name, version, share, sticky, endpoint, timeout):
    """Answer SHARE (0 to 1) of the calls naming only NAME with VERSION (`off`: stop)."""
    if version == "off":
        policy = {"canary": None}
    elif share is None:
        raise click.UsageError("give the SHARE of calls VERSION answers, e.g. 0.1")
    else:
        policy = {"canary": {"version": version, "share": share, "sticky": sticky}}
    result = _call(endpoint, timeout, METHOD.expert_policy, (name, policy))
    _wait(endpoint, timeout, name, lambda served: served.get("canary") == result["canary"])
    canary_text = (f"{result['canary']['version']} answers {result['canary']['share']:.0%}"
                   if result["canary"] else "off")
    _say(result, f"{name}: canary {canary_text}")


def _number(version: str) -> str:
    """A version as the server writes it (``03`` -> ``3``)."""
    return str(int(version)) if version.isascii() and version.isdigit() else version


def _call(endpoint: str, timeout: float, method: str, args: tuple) -> dict:
    """Call the admin method; a refusal is printed with its reason and exits (2, or 3)."""
    try:
        with connect(endpoint, timeout=timeout) as connection:
            return connection.call(method, *args)
    except RemoteError as exc:
        click.echo(f"expertd expert: {exc.name}: {exc.msg}", err=True)
        sys.exit(exit_code(exc.name))
    except (ServerUnavailable, CallTimeout) as exc:
        click.echo(f"expertd expert: no answer from {endpoint} ({exc}); is the server running?",
                   err=True)
        sys.exit(NO_SERVER)


def _wait(endpoint: str, timeout: float, name: str, done) -> None:
    """Ask ``health()`` on fresh connections until every worker's ``served_versions`` is ``done``."""
    deadline = time.monotonic() + timeout
    seen: dict[str, bool] = {}
    workers = 1
    while time.monotonic() < deadline:
        try:
            with connect(endpoint, timeout=10.0) as connection:
                health = connection.call(METHOD.health)
        except (ServerUnavailable, CallTimeout, RemoteError):
            time.sleep(0.2)
            continue
        workers = health.get("workers") or 1
        served = (health.get("served_versions") or {}).get(name)
        seen[health.get("instance") or str(health.get("pid"))] = bool(served and done(served))
        if len(seen) >= workers and all(seen.values()):
            return
        if not seen[health.get("instance") or str(health.get("pid"))]:
            time.sleep(0.1)
    late = sum(1 for ok in seen.values() if not ok) or workers - len(seen)
    click.echo(f"expertd expert: the change was made, but {late} worker(s) did not report it "
               f"within {timeout:g} s; their log says why", err=True)
    sys.exit(1)


def _say(result: dict, what: str) -> None:
    labels = ", ".join(f"{label}={v}" for label, v in (result.get("labels") or {}).items())
    click.echo(f"{what}: serving {', '.join(result['versions'])}; default {result['default']}"
               + (f"; labels {labels}" if labels else ""))
