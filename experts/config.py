"""Read the experts file (YAML), check all of it, and build the experts it names.

The file maps each expert's name to a ``module:attribute`` import string and
its options::

    experts:
      sentiment:
        expert: expertd.experts.keras_text:SentimentExpert
        options: {model_dir: models/sentiment}
        batch: {max_size: 64, max_wait_ms: 2}

The attribute may be an ``Expert`` subclass (built with the options), an
``Expert`` instance, or a plain function (wrapped in ``FunctionExpert``).
Modules are imported from the experts file's directory first, then the current
directory. Relative paths in options ending in ``_dir`` or ``_path`` are
resolved against the directory of the config file (``$EXPERTD_MODELS`` and other
environment variables are expanded), and must exist.

``include: [default, other.yaml]`` adds the experts of other files (``default``:
the packaged default experts, ``expertd/defaults/experts.yaml``; a path: relative
to the including file). A name defined twice is refused unless the including
file's entry says ``overrides: true``. Only the top file's ``server:`` counts.

Every key the file may hold is declared once, as a dataclass field made with
``setting(default, check)``: ``ServerSettings`` (the ``server:`` section),
``ExpertSpec`` (one expert's entry), ``BatchPolicy`` and ``QueuePolicy`` (its
``batch:`` and ``queue:`` sections). To accept a new key, add one such line.
``load_config`` checks the whole file against them and raises one
``ConfigError`` listing every problem (file, line, expert, what to fix) before
anything heavy is imported or loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from expertd.experts.base import Expert, FunctionExpert, quiet_tensorflow
from expertd.experts.needs import input_problems, resolve_needs
from expertd.experts.schemas import compile_schema
from expertd.experts.versions import (ServedVersions, VersionChoice, VersionsInvalid, resolve_versions,
                                     sticky_problem, versions_choice, with_version)
from expertd.paths import PACKAGED_DEFAULTS, models_dir

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "experts.yaml"
#: What ``include:`` accepts by name (anything else must be a path to an experts file).
NAMED_INCLUDES = {"default": PACKAGED_DEFAULTS}


# -- problems -----------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing wrong with the experts file, and where."""

    path: Path
    message: str
    line: int | None = None
    expert: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        who = f"expert {self.expert!r}: " if self.expert else ""
        return f"{where}: {who}{self.message}"


class ConfigError(Exception):
    """The experts file is missing, malformed, or names something that cannot load.

    ``problems`` lists every problem found; ``str()`` shows them one per line.
    """

    def __init__(self, message: str | Iterable[Problem]) -> None:
        """Take one message, or every ``Problem`` found."""
        if isinstance(message, str):
            self.problems: list[Problem] = []
            text = message
        else:
            self.problems = list(message)
            text = "\n".join(str(p) for p in self.problems)
            if len(self.problems) > 1:
                text = (f"{self.problems[0].path}: {len(self.problems)} problems:\n  "
                        + text.replace("\n", "\n  "))
        super().__init__(text)


class ExpertLoadError(ConfigError):
    """An expert's ``load()`` raised; the message names the expert and the exception."""


class Invalid(ValueError):
    """Raised by a check: the value is not acceptable (the message says why)."""


# -- checks: each takes a value and returns it (possibly converted) or raises Invalid

def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if value is None:
        return "nothing (null)"
    kinds = {bool: "a boolean", dict: "a mapping", list: "a list", int: "an integer",
             float: "a number"}
    return f"{kinds.get(type(value), type(value).__name__)} {value!r}"


def _unquote_hint(value: Any, convert: Callable) -> str:
    if isinstance(value, str):
        try:
            convert(value)
            return " (write it without quotes)"
        except ValueError:
            pass
    return ""


def integer(minimum: int | None = None) -> Callable[[Any], int]:
    """A check: an integer (not a boolean), at least ``minimum``."""
    wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be {wanted}, got {_shown(value)}{_unquote_hint(value, int)}")
        if minimum is not None and value < minimum:
            raise Invalid(f"must be {wanted}, got {value}")
        return value

    check.wanted = wanted
    return check


def number(minimum: float | None = None) -> Callable[[Any], float]:
    """A check: an integer or a float, at least ``minimum``."""
    wanted = "a number" + (f" >= {minimum:g}" if minimum is not None else "")

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"must be {wanted}, got {_shown(value)}{_unquote_hint(value, float)}")
        if minimum is not None and value < minimum:
            raise Invalid(f"must be {wanted}, got {value}")
        return value

    check.wanted = wanted
    return check


def text(value: Any) -> str:
    """A check: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a non-empty string, got {_shown(value)}")
    return value


def boolean(value: Any) -> bool:
    """A check: ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {_shown(value)}")
    return value


def reads(value: Any) -> str:
    """A check: what an expert reads; ``document`` (the whole document) is the one choice."""
    if value != "document":
        raise Invalid(f"must be 'document' (the whole document; to read one field, pass "
                      f"options: {{field: NAME}}), got {_shown(value)}")
    return value


def mapping(value: Any) -> dict:
    """A check: a mapping (``null`` counts as empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"must be a mapping (key: value), got {_shown(value)}")
    return dict(value)


def import_string(value: Any) -> str:
    """A check: ``"module:attribute"`` (whether it imports is checked later, with the rest)."""
    module, sep, attr = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not module or not attr:
        raise Invalid(f'must be an import string "<module>:<attribute>", got {_shown(value)}')
    return value


def expert_needs(value: Any) -> list | dict:
    """A check: a list of expert names, or a mapping expert name -> input key (experts/needs.py)."""
    if isinstance(value, str):
        raise Invalid(f"must be a list of expert names (e.g. [{value}]) or a mapping "
                      f"name: input key, got {_shown(value)}")
    if isinstance(value, list):
        bad = [v for v in value if not isinstance(v, str) or not NAME_RE.match(v)]
        if bad:
            raise Invalid(f"must list expert names, but {_shown(bad[0])} is not one")
        return value
    if isinstance(value, dict):
        for name, target in value.items():
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise Invalid(f"keys must be expert names, but {_shown(name)} is not one")
            if not isinstance(target, str) or not target:
                raise Invalid(f"{name}: must be the name of a document field, got {_shown(target)}")
        return dict(value)
    raise Invalid(f"must be a list of expert names or a mapping name: input key, got {_shown(value)}")


def versions_setting(value: Any) -> VersionChoice:
    """A check: which numbered versions of the model to serve (``experts/versions.py``)."""
    try:
        return versions_choice(value)
    except VersionsInvalid as exc:
        raise Invalid(str(exc)) from None


def setting(default: Any, check: Callable[[Any], Any], *, key: str | None = None) -> Any:
    """Declare one key of the experts file: its default and its check (a dataclass field).

    ``key`` is the name in the file when it differs from the attribute's.
    """
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        kind = type(default)
        made = (lambda: kind()) if dataclasses.is_dataclass(default) else (lambda: kind(default))
        return field(default_factory=made, metadata={"check": check, "key": key})
    return field(default=default, metadata={"check": check, "key": key})


def section(cls: type) -> Callable:
    """A check: a mapping whose keys are the settings of dataclass ``cls`` (validated by ``_section``)."""

    def check(value: Any) -> Any:
        raise AssertionError("sections are checked by _section")  # pragma: no cover

    check.section = cls
    return check


# -- the tables (one line per key) --------------------------------------------

@dataclass
class BatchPolicy:
    """How the server groups concurrent requests for one expert (``batch:``)."""

    max_size: int = setting(64, integer(1))
    max_wait_ms: float = setting(0.0, number(0))


@dataclass
class QueuePolicy:
    """How much work the server admits for one expert (``queue:`` in the experts file)."""

    max_docs: int = setting(200_000, integer(1))
    budget_ms: float = setting(1000.0, number(1))


@dataclass
class LearnSettings:
    """How an expert that learns keeps its state (``learn:``; used by ``rpc_server.learning``)."""

    target: str | None = setting(None, text)
    checkpoint_every: int = setting(1000, integer(1))
    checkpoint_seconds: float = setting(60.0, number(0.001))
    poll_ms: float = setting(150.0, number(1))
    #: Most labels the learner may know (``LearnLimit`` for a call that would add more).
    max_labels: int = setting(1000, integer(1))
    #: Most examples one ``learn`` call may carry (``LearnLimit`` beyond).
    max_examples_per_call: int = setting(10_000, integer(1))
    #: Most examples stored but not yet applied (``LearnBacklogFull`` for a call that would go beyond).
    max_backlog: int = setting(100_000, integer(1))


def share(value: Any) -> float:
    """A check: a share of calls, a number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise Invalid(f"must be a number from 0 to 1 (e.g. 0.1 for 10%), got {_shown(value)}")
    return float(value)


def shadow_target(value: Any) -> int | str:
    """A check: a served version number, or the name of another expert of the file."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and NAME_RE.match(value):
        return value
    raise Invalid(f"must be a version number (e.g. 3) or the name of another expert (e.g. "
                  f"learner), got {_shown(value)}")


def sticky(value: Any) -> str:
    """A check: how a canary keeps documents on one version (``none``, ``document``,
    ``field:NAME``: per caller, by the documents' field NAME)."""
    problem = sticky_problem(value)
    if problem is not None:
        raise Invalid(problem)
    return value


@dataclass
class CanaryPolicy:
    """A share of an expert's unnamed calls answered by another served version (``canary:``)."""

    version: int | None = setting(None, integer(0))
    share: float = setting(0.1, share)
    sticky: str = setting("none", sticky)


@dataclass
class CacheSettings:
    """The cache of one expert's opinions (``cache:``; ``rpc_server.opinion_cache``)."""

    #: Most opinions kept (least recently used out); 0 turns the cache off for this expert.
    size: int = setting(10_000, integer(0))


@dataclass
class ExpertSpec:
    """One entry of the experts file (``experts: NAME: ...``)."""

    name: str
    import_string: str = setting("", import_string, key="expert")
    options: dict = setting({}, mapping)
    batch: BatchPolicy = setting(BatchPolicy(), section(BatchPolicy))
    queue: QueuePolicy = setting(QueuePolicy(), section(QueuePolicy))
    needs: list | dict | None = setting(None, expert_needs)
    learn: LearnSettings | None = setting(None, section(LearnSettings))
    #: ``cache: {size: N}``: cache its opinions (default: the server's ``cache_size`` for a
    #: pure expert that reads a field and needs no other, none for another).
    cache: CacheSettings | None = setting(None, section(CacheSettings))
    #: ``reads: document``: the expert gets the whole document, not one field.
    reads: str | None = setting(None, reads)
    #: Replace an expert of that name from an included file (otherwise a clash is an error).
    overrides: bool = setting(False, boolean)
    #: Which numbered versions of its model to serve (``latest``, ``[2, 3]``, ``{stable: 2}``).
    versions: VersionChoice | None = setting(None, versions_setting)
    #: A served version (or another expert, e.g. a learner) that also runs every call the
    #: default answers, off the caller's path.
    shadow: int | str | None = setting(None, shadow_target)
    #: A share of unnamed calls answered by another served version.
    canary: CanaryPolicy | None = setting(None, section(CanaryPolicy))
    #: Seconds between looks at the versions folder: a new highest numbered folder is loaded
    #: and promoted (``versions: latest`` on a running server); ``None``: no watch.
    watch_s: float | None = setting(None, number(0.1))
    #: The versions found on disk for ``versions`` (set by ``load_config``).
    served: ServedVersions | None = field(default=None, compare=False, repr=False)
    #: Where the entry is written in the file (for messages), if known.
    line: int | None = field(default=None, compare=False, repr=False)
    #: The experts file that defines it, and its directory (modules are imported from there first).
    source: Path | None = field(default=None, compare=False, repr=False)
    base: Path | None = field(default=None, compare=False, repr=False)


@dataclass
class ServerSettings:
    """Server-wide settings that may also come from the experts file (``server:``)."""

    max_text_bytes: int = setting(1024 * 1024, integer(1))
    threads: int = setting(4, integer(1))
    #: Most documents one call may carry (``TooManyDocuments`` beyond).
    max_batch_docs: int = setting(100_000, integer(1))
    #: Where learning experts keep their feedback log and checkpoints (default: state/ beside the file).
    state_dir: str | None = setting(None, text)  # relative to the file's directory
    #: The feedback log and checkpoints in PostgreSQL (``postgresql://...``), shared across
    #: machines; unset: SQLite and files in state_dir (one machine). Keep the password out
    #: of the file: libpq reads $PGPASSWORD and ~/.pgpass.
    feedback_log: str | None = setting(None, text)
    #: Largest ZeroMQ message the socket accepts (a bigger one drops that connection).
    max_message_bytes: int = setting(32 * 1024 * 1024, integer(1))
    #: A connection that has not finished its ZMTP handshake by then is closed.
    handshake_timeout_ms: float = setting(5000.0, number(0))
    workers: int | None = setting(None, integer(1))  # processes on one port (``--workers``)
    #: Opinions cached per pure expert (``Expert.pure``) that reads a field and needs no other,
    #: without a ``cache:`` of its own; 0: none.
    cache_size: int = setting(0, integer(0))


@dataclass
class ExpertsConfig:
    """The whole experts file."""

    path: Path
    experts: list[ExpertSpec]
    server: ServerSettings = field(default_factory=ServerSettings)


TOP_LEVEL = ("server", "include", "experts")
REQUIRED_EXPERT_KEYS = ("expert",)


def _settings(cls: type) -> dict[str, dataclasses.Field]:
    """The file's key -> dataclass field, for every field declared with ``setting``."""
    return {f.metadata.get("key") or f.name: f for f in dataclasses.fields(cls)
            if "check" in f.metadata}


# -- YAML with line numbers and duplicate keys ----------------------------------

class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int | None = None
    lines: dict

    def line_of(self, key: Any) -> int | None:
        """The line where ``key`` is written, else where the mapping starts."""
        return self.lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that keeps line numbers and records keys written twice."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: ``(key, first line, repeated line, mapping, the earlier value)`` per repeated key.
        self.duplicates: list[tuple[Any, int, int, dict, Any]] = []
        self._path: list = []

    def construct_mapping(self, node, deep=False):
        """Build a ``_Mapping``; a repeated key is recorded instead of silently replacing."""
        self.flatten_mapping(node)
        out = _Mapping()
        out.line = node.start_mark.line + 1
        out.lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "found an unhashable key", key_node.start_mark) from None
            line = key_node.start_mark.line + 1
            value = self.construct_object(value_node, deep=deep)
            if key in out.lines:
                self.duplicates.append((key, out.lines[key], line, out, out[key]))
            out.lines[key] = line
            out[key] = value
        return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def _parse(path: Path) -> tuple[Any, list]:
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"experts file not found: {path} (pass --config FILE or set "
                          f"EXPERTD_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read experts file {path}: {exc}") from None
    loader = _Loader(source)
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        context, opened = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if opened is not None and context and "<stream end>" in what:
            mark, what = opened, f"{context} that is never closed ({what})"
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {what}") from None
    finally:
        loader.dispose()


# -- validation -----------------------------------------------------------------

def _did_you_mean(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


class _Checker:
    """Collects every problem of one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def add(self, message: str, line: int | None = None, expert: str | None = None) -> None:
        self.problems.append(Problem(self.path, message, line, expert))

    def section(self, cls: type, raw: Any, where: str, line: int | None,
                expert: str | None = None, fixed: dict | None = None) -> Any:
        """Check mapping ``raw`` against the settings of ``cls``; return an instance."""
        table = _settings(cls)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.add(f"{where} must be a mapping (key: value), got {_shown(raw)}", line, expert)
            return cls(**(fixed or {}))
        values = dict(fixed or {})
        for key, value in raw.items():
            key_line = raw.line_of(key) if isinstance(raw, _Mapping) else line
            label = f"{where}.{key}" if where else str(key)
            spec = table.get(key)
            if spec is None:
                self.add(f"unknown key {label!r}{_did_you_mean(key, table)}", key_line, expert)
                continue
            check = spec.metadata["check"]
            nested = getattr(check, "section", None)
            if nested is not None:
                values[spec.name] = self.section(nested, value, label, key_line, expert)
                continue
            try:
                values[spec.name] = check(value)
            except Invalid as exc:
                self.add(f"{label} {exc}", key_line, expert)
        return cls(**values)


def _resolve_paths(options: dict, base: Path) -> dict:
    resolved = {}
    variables = {**os.environ, "EXPERTD_MODELS": str(models_dir())}
    for key, value in options.items():
        if isinstance(value, str) and _is_path_option(key):
            path = Path(string.Template(value).safe_substitute(variables)).expanduser()
            value = os.path.normpath(path if path.is_absolute() else base / path)
        resolved[key] = value
    return resolved


def _is_path_option(key: Any) -> bool:
    return isinstance(key, str) and (key.endswith("_dir") or key.endswith("_path"))


def load_config(path: str | Path | None = None, reserved: Iterable[str] = ()) -> ExpertsConfig:
    """Parse and check the whole experts file (default: ``config/experts.yaml``) and its includes.

    Raises one ``ConfigError`` listing every problem: types, unknown keys (with
    a "did you mean"), names given twice, names in ``reserved``, import strings
    that do not import, path options that do not exist, includes that are
    missing, unknown or circular.
    """
    quiet_tensorflow()  # before any expert's module is imported: it applies to every expert
    path = Path(path or DEFAULT_CONFIG)
    raw, duplicates = _parse(path)
    checker = _Checker(path)
    base = path.absolute().parent
    server_raw = raw.get("server") if isinstance(raw, dict) else None
    server = checker.section(ServerSettings, server_raw, "server",
                             raw.line_of("server") if isinstance(raw, _Mapping) else None)
    server.state_dir = _resolve_paths({"state_dir": server.state_dir or "state"}, base)["state_dir"]
    specs = _read_experts(path, raw, duplicates, checker, set(reserved), (path.resolve(),), base)
    if not specs and not checker.problems:
        line = raw.line_of("experts") if isinstance(raw, _Mapping) else None
        checker.add("needs a non-empty 'experts:' mapping (name: module:attribute), or "
                    "'include:' of a file that has one", line)
    graph, problems = resolve_needs({spec.name: spec.needs for spec in specs})
    where = {spec.name: spec for spec in specs}
    for name, message in problems:  # unknown names and cycles (experts/needs.py)
        spec = where.get(name)
        checker.problems.append(Problem(spec.source if spec else path, message,
                                        spec.line if spec else None))
    for spec in specs:
        spec.needs = graph.get(spec.name, {})
        if isinstance(spec.shadow, str) and (spec.shadow not in where or spec.shadow == spec.name):
            checker.problems.append(Problem(spec.source or path, f"shadow: {spec.shadow!r} is "
                                            f"neither a served version nor another expert of "
                                            f"this file ({', '.join(where)})", spec.line, spec.name))
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: (p.path != path, p.line or 0)))
    return ExpertsConfig(path=path, experts=specs, server=server)


def _read_experts(path: Path, raw: Any, duplicates: list, checker: _Checker, reserved: set,
                  stack: tuple[Path, ...], top_base: Path) -> list[ExpertSpec]:
    """The experts of one file: those of its includes first, then its own (problems to ``checker``)."""
    if not isinstance(raw, dict):
        checker.add("needs a non-empty 'experts:' mapping (name: module:attribute)")
        return []
    experts_map = raw.get("experts")
    if experts_map is None and "include" in raw:
        experts_map = {}
    elif not isinstance(experts_map, dict) or not experts_map:
        checker.add("needs a non-empty 'experts:' mapping (name: module:attribute)",
                    raw.line_of("experts") if isinstance(raw, _Mapping) else None)
        return []
    entries = [(name, entry, experts_map.line_of(name)) for name, entry in experts_map.items()]
    for key, first, again, where, earlier in duplicates:
        if where is experts_map:
            entries.append((key, earlier, first))  # checked too, so none of its problems hide
            checker.add(f"defined twice (lines {first} and {again}); YAML would silently keep "
                        f"only the second: rename or remove one", again, str(key))
        else:
            checker.add(f"key {key!r} written twice in one mapping (lines {first} and "
                        f"{again}); YAML would silently keep only the second", again)
    for key in raw:
        if key not in TOP_LEVEL:
            checker.add(f"unknown top-level key {key!r}{_did_you_mean(key, TOP_LEVEL)}",
                        raw.line_of(key))
    base = path.absolute().parent
    included = _read_includes(raw, checker, reserved, stack, base, top_base)
    own = []
    for name, entry, line in sorted(entries, key=lambda e: e[2] or 0):
        label = name if isinstance(name, str) else None
        if not isinstance(name, str) or not NAME_RE.match(name):
            checker.add(f"expert name {name!r} must be an identifier (a letter, then letters, "
                        f"digits or _)", line)
            continue
        if name in reserved:
            checker.add(f"the name {name!r} is reserved for the server's RPC method of that "
                        f"name ({', '.join(sorted(reserved))}); choose another", line, label)
        if isinstance(entry, str):
            entry = {"expert": entry}
        elif not isinstance(entry, dict):
            checker.add(f"needs 'expert: module:attribute' (or just the import string), got "
                        f"{_shown(entry)}", line, label)
            continue
        for key in REQUIRED_EXPERT_KEYS:
            if key not in entry:
                checker.add(f"needs '{key}: module:attribute'", line, label)
        fixed = {"name": name, "line": line, "source": path, "base": base}
        spec = checker.section(ExpertSpec, entry, "", line, label, fixed=fixed)
        spec.options = _resolve_paths(spec.options, base)
        if spec.import_string:
            _check_import(checker, spec, line)
        _check_paths(checker, spec, entry, base, line)
        _check_versions(checker, spec, line)
        own.append(spec)
    from_includes = {spec.name: spec for spec in included}
    merged, extra = dict(from_includes), []
    for spec in own:
        earlier = from_includes.get(spec.name)
        if earlier is not None and not spec.overrides:
            checker.add(f"is also defined in the included file {_shown_path(earlier.source, top_base)} "
                        f"(line {earlier.line}): rename yours, or add 'overrides: true' to its "
                        f"entry to replace that one", spec.line, spec.name)
        elif earlier is None and spec.overrides:
            checker.add("has 'overrides: true' but no included file defines an expert of that "
                        "name (remove it, or check the name)", spec.line, spec.name)
        if spec.name in from_includes:
            merged.pop(spec.name)
            merged[spec.name] = spec
        elif spec.name in merged:
            extra.append(spec)  # a name twice in one file (reported above), checked like the rest
        else:
            merged[spec.name] = spec
    return list(merged.values()) + extra


def _shown_path(path: Path | None, top_base: Path) -> str:
    """A file as messages show it: relative to the top experts file's folder when inside it."""
    if path is None:
        return "?"
    try:
        return str(path.absolute().relative_to(top_base))
    except ValueError:
        return str(path)


def _read_includes(raw: dict, checker: _Checker, reserved: set, stack: tuple[Path, ...],
                   base: Path, top_base: Path) -> list[ExpertSpec]:
    """The experts of every file that ``include:`` names, in order (a name twice is refused)."""
    if "include" not in raw:
        return []
    value = raw["include"]
    line = raw.line_of("include") if isinstance(raw, _Mapping) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        checker.add(f"include must be a list of experts files (names such as 'default', or paths), "
                    f"got {_shown(value)}", line)
        return []
    found: dict[str, ExpertSpec] = {}
    for item in value:
        if item in NAMED_INCLUDES:
            target = NAMED_INCLUDES[item]
        elif "/" not in item and not item.endswith((".yaml", ".yml")):
            checker.add(f"include {item!r} is not a known name (known: "
                        f"{', '.join(NAMED_INCLUDES)}) nor a path to an experts file "
                        f"(a path ends in .yaml or has a /)", line)
            continue
        else:
            target = Path(item).expanduser()
            target = target if target.is_absolute() else base / target
        resolved = target.resolve()
        if resolved in stack:
            chain = " -> ".join(_shown_path(p, top_base) for p in (*stack, resolved))
            checker.add(f"include {item!r} makes a cycle ({chain}); remove one of the includes", line)
            continue
        if not target.exists():
            checker.add(f"include {item!r}: experts file not found ({target}; relative paths are "
                        f"read from {base})", line)
            continue
        try:
            sub_raw, sub_duplicates = _parse(target)
        except ConfigError as exc:
            checker.add(f"include {item!r}: {exc}", line)
            continue
        sub_checker = _Checker(target)
        specs = _read_experts(target, sub_raw, sub_duplicates, sub_checker, reserved,
                              (*stack, resolved), top_base)
        checker.problems.extend(sub_checker.problems)
        for spec in specs:
            if spec.name in found:
                checker.add(f"include {item!r}: expert {spec.name!r} is defined in "
                            f"{_shown_path(found[spec.name].source, top_base)} too; include "
                            f"only one of them", line)
                continue
            found[spec.name] = spec
    return list(found.values())


def _check_import(checker: _Checker, spec: ExpertSpec, line: int | None) -> None:
    """Import the expert's module now, so that a bad import is reported with the rest."""
    entry_line = line
    try:
        import_from_string(spec.import_string, spec.base)
    except ConfigError as exc:
        checker.add(str(exc), entry_line, spec.name)
    except Exception as exc:  # the module itself failed while importing
        checker.add(f"importing {spec.import_string!r} failed: {type(exc).__name__}: {exc}",
                    entry_line, spec.name)


def _check_paths(checker: _Checker, spec: ExpertSpec, entry: dict, base: Path,
                 line: int | None) -> None:
    """Every ``*_dir``/``*_path`` option must name something that exists."""
    options = entry.get("options")
    for key, value in spec.options.items():
        if isinstance(value, str) and _is_path_option(key) and not Path(value).exists():
            where = options.line_of(key) if isinstance(options, _Mapping) else line
            written = options.get(key) if isinstance(options, dict) else value
            hint = ("; run `expertd models train` to train the default models (`make models` "
                    "in the repository)") if "models" in Path(value).parts else ""
            checker.add(f"options.{key}: {written!r} does not exist ({value}; relative paths "
                        f"are read from {base}){hint}", where, spec.name)


def _check_versions(checker: _Checker, spec: ExpertSpec, line: int | None) -> None:
    """Match ``versions:`` against the numbered folders on disk (``spec.served``)."""
    if spec.versions is None:
        if spec.shadow is not None or spec.canary is not None or spec.watch_s is not None:
            checker.add("shadow:, canary: and watch_s: need versions: (the versions to serve)",
                        line, spec.name)
        return
    if spec.learn is not None:
        checker.add("versions: an expert that learns keeps one model (its checkpoints); remove "
                    "versions: or learn:", line, spec.name)
        return
    if spec.cache is not None:
        checker.add("cache: an expert with versions: is not cached yet (a promote or rollback "
                    "changes who answers); remove cache: or versions:", line, spec.name)
        return
    try:
        spec.served = resolve_versions(spec.versions, spec.options)
    except VersionsInvalid as exc:
        checker.add(f"versions: {exc}", line, spec.name)
        return
    if spec.canary is not None and spec.canary.version is None:
        checker.add("canary.version: which served version answers the share (e.g. canary: "
                    "{version: 3, share: 0.1})", line, spec.name)
    shadow = spec.shadow if isinstance(spec.shadow, int) else None  # a name: checked with the rest
    for key, version in (("shadow", shadow),
                         ("canary.version", spec.canary.version if spec.canary else None)):
        if version is not None and str(version) not in spec.served.folders:
            checker.add(f"{key}: {version} is not served (versions: "
                        f"{', '.join(spec.served.folders)})", line, spec.name)


# -- building and loading ---------------------------------------------------------

def import_from_string(import_string: str, base: Path | None = None) -> Any:
    """Import ``"package.module:attribute"`` (attribute may be dotted).

    With ``base`` (the experts file's folder), modules there are found first.
    """
    module_name, sep, attr = import_string.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f'import string "{import_string}" must be in format "<module>:<attribute>"')
    if base is not None and str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name:
            raise
        where = f"{base} (the experts file's folder), then " if base is not None else ""
        raise ConfigError(f'could not import module "{module_name}" (is it on the path? '
                          f'modules are looked up in {where}the current directory)') from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f'attribute "{attr}" not found in module "{module_name}"') from None
    return obj


def build_expert(spec: ExpertSpec) -> Expert:
    """Import and construct the expert an entry names (not yet loaded)."""
    target = import_from_string(spec.import_string, spec.base)
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
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expert {spec.name!r}: {exc}") from None
    if spec.reads == "document":
        expert.field, expert.input_type = None, dict
    problems = input_problems(expert, spec.needs or {})
    if problems:
        raise ConfigError("; ".join(problems))
    schema = getattr(expert, "opinion_schema", None)
    if schema is not None:
        try:
            compile_schema(schema)
        except ValueError as exc:
            raise ConfigError(f"expert {spec.name!r}: {exc} (fix it, or set it to None)") from None
    expert.needs = dict(spec.needs or {})
    return expert


def build_version(spec: ExpertSpec, version: str) -> Expert:
    """Construct one served version of a versioned expert (``versions:``), not yet loaded."""
    if spec.served is None or version not in spec.served.folders:
        raise ConfigError(f"expert {spec.name!r} serves no version {version!r}")
    expert = build_expert(with_version(spec, spec.served, version))
    expert.version = version
    return expert


def build_experts(config: ExpertsConfig) -> dict[str, Expert]:
    """Construct every expert of ``config`` (nothing loaded); one ``ConfigError`` lists all failures.

    A versioned expert is built at its default version (``build_version`` makes the others).
    """
    experts, problems = {}, []
    for spec in config.experts:
        try:
            experts[spec.name] = (build_expert(spec) if spec.served is None
                                  else build_version(spec, spec.served.default))
            if spec.learn is not None and not getattr(experts[spec.name], "learns", False):
                problems.append(Problem(config.path, "has 'learn:' settings but does not learn "
                                        "(remove them, or name an expert that learns)",
                                        spec.line, spec.name))
        except ConfigError as exc:
            message = str(exc).removeprefix(f"expert {spec.name!r}: ")
            problems.append(Problem(config.path, message, spec.line, spec.name))
        except Exception as exc:  # a constructor that fails some other way
            problems.append(Problem(config.path, f"constructing it failed: "
                                    f"{type(exc).__name__}: {exc}", spec.line, spec.name))
    if problems:
        raise ConfigError(problems)
    return experts


def load_expert(spec: ExpertSpec, expert: Expert) -> None:
    """Call ``expert.load()``; a failure becomes an ``ExpertLoadError`` naming the expert."""
    try:
        expert.load()
    except Exception as exc:
        raise ExpertLoadError(f"expert {spec.name!r} ({spec.import_string}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc


def ensure_cwd_importable() -> None:
    """Let ``module:attribute`` strings name modules in the current directory, like uvicorn."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
