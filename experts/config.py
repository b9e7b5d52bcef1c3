"""Read the experts file (YAML) and build the experts it names.

The file maps each expert's name to a ``module:attribute`` import string and
its options::

    experts:
      sentiment:
        expert: experts.keras_text:SentimentExpert
        options: {model_dir: models/sentiment}
        batch: {max_size: 64, max_wait_ms: 2}

The attribute may be an ``Expert`` subclass (built with the options), an
``Expert`` instance, or a plain function (wrapped in ``FunctionExpert``).
Relative paths in options ending in ``_dir`` or ``_path`` are resolved against
the directory of the config file.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from experts.base import Expert, FunctionExpert

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "experts.yaml"


class ConfigError(Exception):
    """The experts file is missing, malformed, or names something that cannot load."""


@dataclass
class BatchPolicy:
    """How the server groups concurrent requests for one expert."""

    max_size: int = 64
    max_wait_ms: float = 0.0


@dataclass
class QueuePolicy:
    """How much work the server admits for one expert (``queue:`` in the experts file)."""

    max_docs: int = 200_000
    budget_ms: float = 1000.0


@dataclass
class ExpertSpec:
    """One entry of the experts file."""

    name: str
    import_string: str
    options: dict = field(default_factory=dict)
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    queue: QueuePolicy = field(default_factory=QueuePolicy)


@dataclass
class ServerSettings:
    """Server-wide settings that may also come from the experts file."""

    max_text_bytes: int = 1024 * 1024
    threads: int = 4
    #: Most documents one call may carry (``TooManyDocuments`` beyond).
    max_batch_docs: int = 100_000
    #: Largest ZeroMQ message the socket accepts (a bigger one drops that connection).
    max_message_bytes: int = 32 * 1024 * 1024
    #: A connection that has not finished its ZMTP handshake by then is closed.
    handshake_timeout_ms: float = 5000.0
    workers: int | None = None  # worker processes on one port (``expertd serve --workers``)


@dataclass
class ExpertsConfig:
    """The whole experts file."""

    path: Path
    experts: list[ExpertSpec]
    server: ServerSettings = field(default_factory=ServerSettings)


def import_from_string(import_string: str) -> Any:
    """Import ``"package.module:attribute"`` (attribute may be dotted)."""
    module_name, sep, attr = import_string.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f'import string "{import_string}" must be in format "<module>:<attribute>"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(f'could not import module "{module_name}"') from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f'attribute "{attr}" not found in module "{module_name}"') from None
    return obj


def _resolve_paths(options: dict, base: Path) -> dict:
    resolved = {}
    for key, value in options.items():
        if isinstance(value, str) and (key.endswith("_dir") or key.endswith("_path")):
            path = Path(value).expanduser()
            value = str(path if path.is_absolute() else (base / path).resolve())
        resolved[key] = value
    return resolved


def load_config(path: str | Path | None = None) -> ExpertsConfig:
    """Parse and validate the experts file (default: ``config/experts.yaml``)."""
    path = Path(path or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"experts file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"experts file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("experts"), dict) or not raw["experts"]:
        raise ConfigError(f"experts file {path} needs a non-empty 'experts:' mapping")
    base = path.resolve().parent
    specs = []
    for name, entry in raw["experts"].items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(f"expert name {name!r} must be an identifier (letters, digits, _)")
        if isinstance(entry, str):
            entry = {"expert": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("expert"), str):
            raise ConfigError(f"expert {name!r} needs 'expert: module:attribute'")
        unknown = set(entry) - {"expert", "options", "batch", "queue"}
        if unknown:
            raise ConfigError(f"expert {name!r} has unknown keys: {', '.join(sorted(unknown))}")
        batch = entry.get("batch") or {}
        try:
            policy = BatchPolicy(**batch)
        except TypeError as exc:
            raise ConfigError(f"expert {name!r}: bad batch settings: {exc}") from None
        if policy.max_size < 1 or policy.max_wait_ms < 0:
            raise ConfigError(f"expert {name!r}: batch max_size must be >= 1 and max_wait_ms >= 0")
        try:
            queue = QueuePolicy(**(entry.get("queue") or {}))
        except TypeError as exc:
            raise ConfigError(f"expert {name!r}: bad queue settings: {exc}") from None
        if not isinstance(queue.max_docs, int) or queue.max_docs < 1 or queue.budget_ms <= 0:
            raise ConfigError(f"expert {name!r}: queue max_docs must be >= 1 and budget_ms > 0")
        specs.append(ExpertSpec(name, entry["expert"],
                                _resolve_paths(entry.get("options") or {}, base), policy, queue))
    try:
        server = ServerSettings(**(raw.get("server") or {}))
    except TypeError as exc:
        raise ConfigError(f"bad 'server:' settings in {path}: {exc}") from None
    return ExpertsConfig(path=path, experts=specs, server=server)


def build_expert(spec: ExpertSpec) -> Expert:
    """Import and construct the expert an entry names (not yet loaded)."""
    target = import_from_string(spec.import_string)
    try:
        if inspect.isclass(target) and issubclass(target, Expert):
            expert = target(spec.name, **spec.options)
        elif isinstance(target, Expert):
            expert = target
            expert.name = spec.name
        elif callable(target):
            expert = FunctionExpert(target, spec.name, **spec.options)
        else:
            raise ConfigError(f"expert {spec.name!r}: {spec.import_string} is not an expert or a function")
    except TypeError as exc:
        raise ConfigError(f"expert {spec.name!r}: {exc}") from None
    return expert


def ensure_cwd_importable() -> None:
    """Let ``module:attribute`` strings name modules in the current directory, like uvicorn."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
