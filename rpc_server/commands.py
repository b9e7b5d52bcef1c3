"""``expertd serve``: the click command; its options map one to one onto ``ServerConfig``."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import click

from expertd.options import bind_option
from expertd.rpc_server.server import ServerConfig


@click.command("serve")
@bind_option()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="EXPERTD_CONFIG", default=None,
              help="Experts file (YAML). Default: config/experts.yaml (env EXPERTD_CONFIG).")
@click.option("--max-text-bytes", type=click.IntRange(min=1), default=None,
              help="Largest text field accepted, in bytes. Default: from the experts file, "
                   "else 1 MiB.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Native threads that run the models. Default: from the experts file, else 4.")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="zerorpc heartbeat interval, seconds (peers give up after two missed).")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM/SIGINT, seconds to let in-flight calls finish.")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes sharing the endpoint, under a supervisor that restarts "
                   "them and reloads on SIGHUP. Default: from the experts file, else one process.")
@click.option("--health-port", type=click.IntRange(min=1, max=65535), default=None,
              help="Answer GET /health (200 serving, 503 not) on the bind host:PORT, "
                   "for load balancers.")
@click.option("--curve-secret-key", type=click.Path(dir_okay=False, path_type=Path),
              envvar="EXPERTD_CURVE_SECRET_KEY", default=None,
              help="Encrypt every connection (CurveZMQ) with this server *.key_secret file "
                   "from `expertd keygen` (env EXPERTD_CURVE_SECRET_KEY).")
@click.option("--authorized-keys", type=click.Path(file_okay=False, path_type=Path),
              envvar="EXPERTD_AUTHORIZED_KEYS", default=None,
              help="Accept only clients whose public *.key file is in this directory; "
                   "re-read on change (env EXPERTD_AUTHORIZED_KEYS).")
@click.option("--insecure", is_flag=True, default=False,
              help="Allow a non-loopback --bind without CURVE (logs a warning at start).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--feedback-log", envvar="EXPERTD_FEEDBACK_LOG", default=None, metavar="URL",
              help="Keep the feedback log and checkpoints of experts that learn in PostgreSQL "
                   "(postgresql://...), shared by servers on several machines. Default: the "
                   "experts file's server.feedback_log, else SQLite in its state_dir "
                   "(env EXPERTD_FEEDBACK_LOG).")
@click.option("--check", "check_only", is_flag=True,
              help="Only check the experts file and the endpoint, then exit (0: all good).")
def serve(bind, config_path, max_text_bytes, threads, heartbeat, drain_timeout, metrics_port,
          workers, health_port, curve_secret_key, authorized_keys, insecure, log_level,
          check_only, feedback_log):
    """Load every expert once and answer opinions over ZeroRPC.

    The experts file and the endpoint are checked first, so a mistake in
    either is reported in a second, before any model loads.
    """
    config = ServerConfig(bind=bind, config=config_path, max_text_bytes=max_text_bytes,
                          threads=threads, heartbeat=heartbeat, drain_timeout=drain_timeout,
                          metrics_port=metrics_port, log_level=log_level,
                          health_port=health_port, curve_secret_key=curve_secret_key,
                          authorized_keys=authorized_keys, insecure=insecure,
                          feedback_log=feedback_log)
    if check_only:
        check_config(config)
        return
    from expertd.rpc_server import runtime

    runtime.use_system_allocator()  # once, before anything loads (rpc_server/runtime.py)
    configure_logging(log_level)
    from expertd import tracing

    tracing.configure("expertd")  # the spans' service.name (OTEL_SERVICE_NAME overrides it)
    from expertd.rpc_server.server import run
    from expertd.rpc_server.supervisor import supervise, wanted_workers

    with startup_errors(bind):
        workers = wanted_workers(workers, config_path)
        if workers:
            sys.exit(supervise(workers, config_path, drain_timeout, bind))
        run(config)


@click.command("check", short_help="Check the experts file and endpoint; do not serve.")
@bind_option("The endpoint `expertd serve` would listen on (env EXPERTD_ENDPOINT).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="EXPERTD_CONFIG", default=None,
              help="Experts file (YAML). Default: config/experts.yaml (env EXPERTD_CONFIG).")
@click.option("--load", "load", is_flag=True,
              help="Also load every expert and time it: warns when one document costs more than "
                   "10x its share of a batch (e.g. Keras' model.predict).")
def check(bind, config_path, load):
    """Check the experts file and the endpoint without serving (same as serve --check).

    Every problem is listed at once, with the file, the line and the expert.
    With --load, every expert is also loaded and timed (one document against
    a batch), with a one-line warning for each that pays a fixed cost per call.
    Exit status 0 when `expertd serve` would start, 1 otherwise.
    """
    check_config(ServerConfig(bind=bind, config=config_path), load=load)


def check_config(config: ServerConfig, load: bool = False) -> None:
    """What ``--check`` does: read and check everything that can be checked without loading.

    With ``load``, load each expert too and warn (stderr) about per-call costs.
    """
    from expertd.experts.config import build_experts, ensure_cwd_importable, load_expert
    from expertd.rpc_server.server import ExpertdServer

    ensure_cwd_importable()
    with startup_errors(config.bind):
        file = config.load_experts_file()
        experts = build_experts(file)
        ExpertdServer(config).check_endpoint()
        if load:
            from expertd.experts.timing import per_call_warning

            for spec in file.experts:
                load_expert(spec, experts[spec.name])
                warning = per_call_warning(experts[spec.name])
                if warning:
                    click.echo(warning, err=True)
    names = ", ".join(spec.name for spec in file.experts)
    loaded = " load and" if load else ""
    click.echo(f"{file.path}: {len(file.experts)} experts ({names}){loaded} look right; "
               f"{config.bind} is free to serve on")


@contextlib.contextmanager
def startup_errors(bind: str):
    """Turn what can go wrong at start-up into one clear line (exit status 1), no traceback."""
    import zmq

    from expertd.experts.config import ConfigError
    from expertd.rpc_server.endpoint import EndpointError
    from expertd.rpc_server.security import SecurityError

    try:
        yield
    except (ConfigError, EndpointError, SecurityError) as exc:
        raise click.ClickException(str(exc)) from None
    except zmq.ZMQError as exc:  # the real bind lost a race, or an endpoint zmq refuses
        raise click.ClickException(f"cannot serve on {bind}: {exc.strerror}") from None
    except OSError as exc:  # e.g. the metrics port
        raise click.ClickException(f"cannot start: {exc}") from None


def configure_logging(level: str) -> None:
    """One line per record on stderr, with time, level and logger."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # TensorFlow's C++ and absl chatter is not ours to show at info level.
    logging.getLogger("absl").setLevel(logging.WARNING)
