"""Numbered versions of an expert's model (``versions:`` in the experts file).

An expert whose entry says ``versions:`` keeps each version of its model in a
numbered folder inside its one folder option (``model_dir: models/sentiment``
-> ``models/sentiment/2/``, ``models/sentiment/3/``: the layout TF Serving and
Triton use). The entry says which to serve::

    versions: latest             # the highest numbered folder
    versions: [2, 3]             # these
    versions: {stable: 2, canary: 3}   # these, with labels calls may name

A call that names no version gets the *default* one: the version labelled
``stable`` if there is one, else the highest served. Each served version is
its own expert object, built with the folder option pointing at its folder.
An entry without ``versions:`` works as it always did (one model, version
from the expert itself).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The label that unnamed calls get when the experts file gives labels.
DEFAULT_LABEL = "stable"
_LABEL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class VersionsInvalid(ValueError):
    """The ``versions:`` value cannot be read (the message says why)."""


@dataclass
class VersionChoice:
    """What ``versions:`` says, checked but not yet matched against the folders."""

    latest: bool = False
    numbers: list[int] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)


def versions_choice(value: Any) -> VersionChoice:
    """A check for ``versions:``: ``latest``, a list of numbers, or ``{label: number}``."""
    if value == "latest":
        return VersionChoice(latest=True)
    if isinstance(value, list):
        if not value or not all(_is_number(v) for v in value):
            raise VersionsInvalid(f"must be 'latest', a list of version numbers (e.g. [2, 3]) or "
                                  f"labels (e.g. {{stable: 2, canary: 3}}), got {value!r}")
        return VersionChoice(numbers=sorted(set(value)))
    if isinstance(value, dict) and value:
        for label, number in value.items():
            if not isinstance(label, str) or not _LABEL_RE.fullmatch(label) or label == "latest":
                raise VersionsInvalid(f"label {label!r} must be a word (a letter, then letters, "
                                      f"digits, _ or -; not 'latest')")
            if not _is_number(number):
                raise VersionsInvalid(f"{label}: must be a version number, got {number!r}")
        return VersionChoice(numbers=sorted(set(value.values())), labels=dict(value))
    raise VersionsInvalid(f"must be 'latest', a list of version numbers (e.g. [2, 3]) or labels "
                          f"(e.g. {{stable: 2, canary: 3}}), got {value!r}")


versions_choice.wanted = "'latest', a list of version numbers, or {label: number}"


_STICKY_FIELD_RE = re.compile(r"field:[A-Za-z_][A-Za-z0-9_.-]*")


def sticky_problem(value: Any) -> str | None:
    """Why ``value`` is not a canary's ``sticky`` (``none``, ``document``, ``field:NAME``), or None.

    ``field:NAME`` keeps each caller on one version: the caller puts its id in the documents'
    field NAME (e.g. ``field:user``); a document without it is drawn on its own.
    """
    if value in ("none", "document") or (isinstance(value, str) and _STICKY_FIELD_RE.fullmatch(value)):
        return None
    return (f"must be 'none' (drawn per document), 'document' (the same input always gets the "
            f"same version) or 'field:NAME' (the same value of the document's field NAME, e.g. "
            f"a caller's id, always gets the same version), got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class ServedVersions:
    """The versions of one expert to serve: folders, labels and the default."""

    #: The option that points at the versions' folder (e.g. ``model_dir``).
    option: str
    #: The versions' parent folder.
    root: Path
    #: Version (a string, e.g. ``"3"``) -> its folder, lowest first.
    folders: dict[str, Path]
    #: Label -> version.
    labels: dict[str, str]

    @property
    def default(self) -> str:
        """The version that unnamed calls get: ``stable``'s if labelled, else the highest."""
        return self.labels.get(DEFAULT_LABEL) or list(self.folders)[-1]

    def options_for(self, options: dict, version: str) -> dict:
        """The expert's constructor options for ``version`` (its folder option pointed there)."""
        return {**options, self.option: str(self.folders[version])}

    def labels_of(self, version: str) -> list[str]:
        """The labels that name ``version``."""
        return [label for label, v in self.labels.items() if v == version]


def numbered_folders(root: Path) -> dict[int, Path]:
    """The numbered sub-folders of ``root`` (``2/``, ``3/``), by number."""
    if not root.is_dir():
        return {}
    return {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}


def resolve_versions(choice: VersionChoice, options: dict) -> ServedVersions:
    """Match ``choice`` against the folders on disk; ``VersionsInvalid`` says what is missing."""
    folder_options = [key for key, value in options.items()
                      if isinstance(key, str) and key.endswith("_dir") and isinstance(value, str)]
    if len(folder_options) != 1:
        raise VersionsInvalid(f"needs exactly one *_dir option (the folder holding the numbered "
                              f"versions, e.g. model_dir: models/sentiment), got "
                              f"{', '.join(folder_options) or 'none'}")
    option = folder_options[0]
    root = Path(options[option])
    found = numbered_folders(root)
    if not found:
        raise VersionsInvalid(f"{option} {root} holds no numbered version folders (e.g. "
                              f"{root / '1'}); put each version of the model in its own")
    if choice.latest:
        numbers = [max(found)]
    else:
        missing = [n for n in choice.numbers if n not in found]
        if missing:
            raise VersionsInvalid(f"version {missing[0]} has no folder {root / str(missing[0])} "
                                  f"(found: {', '.join(map(str, sorted(found)))})")
        numbers = choice.numbers
    return ServedVersions(option=option, root=root,
                          folders={str(n): found[n] for n in sorted(numbers)},
                          labels={label: str(n) for label, n in choice.labels.items()})


def with_version(spec: Any, served: ServedVersions, version: str) -> Any:
    """A copy of the experts-file entry ``spec`` for one version (options pointed at its folder)."""
    return dataclasses.replace(spec, options=served.options_for(spec.options, version))
