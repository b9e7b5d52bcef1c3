"""The served versions of one expert, and which one a call gets (``experts/versions.py``).

Calls name ``NAME`` (the default version: ``stable`` if labelled, else the
highest served) or ``NAME@VERSION`` with a number or a label. An answer made
by a version records it in the document's ``versions.<name>``; a chain reuses
a carried opinion only if it was made by the version this call would ask.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, NamedTuple

from expertd.experts.base import Expert
from expertd.experts.versions import ServedVersions
from expertd.rpc_server.batching import MicroBatcher
from expertd.rpc_server.errors import UnknownExpert, VersionRefused
from expertd.rpc_server.logsafe import shown


class Canary(NamedTuple):
    """A share of unnamed calls answered by another version (``canary:``)."""

    version: str
    share: float
    #: ``document``: the same input always gets the same version; ``field:NAME``: the same
    #: value of the documents' field NAME (a caller's id) does; ``none``: drawn per document.
    sticky: str = "none"


class VersionSet:
    """The loaded versions of one expert: an expert object and a batcher each."""

    def __init__(self, name: str, served: ServedVersions, experts: dict[str, Expert],
                 batchers: dict[str, MicroBatcher]) -> None:
        """``experts`` and ``batchers`` by version (strings); labels and default from ``served``."""
        self.name = name
        self.experts = dict(experts)
        self.batchers = dict(batchers)
        self.labels = dict(served.labels)
        self.default = served.default
        #: The folder holding the numbered versions (where ``expert_load`` looks).
        self.root = served.root
        #: The defaults before each ``promote``, oldest first (``rollback`` goes back one).
        self.history: list[str] = []
        #: Other experts served as members (``shadow: learner``): never unloaded.
        self.members: set[str] = set()
        #: The version that also runs, off the caller's path, what the default answers.
        self.shadow: str | None = None
        #: ``Canary(version, share, sticky)``: the share of unnamed calls that version answers.
        self.canary: Canary | None = None

    def policy(self) -> dict:
        """``{"shadow", "canary"}`` as the experts file and ``expert_policy`` write them."""
        canary = None if self.canary is None else {
            "version": self.canary.version, "share": self.canary.share, "sticky": self.canary.sticky}
        return {"shadow": self.shadow, "canary": canary}

    def choose(self, value: Any, doc: Any = None) -> str:
        """The version an unnamed call gets for one document ``doc`` whose input is ``value``."""
        canary = self.canary
        if canary is None or canary.version not in self.experts:
            return self.default
        key = None
        if canary.sticky == "document":
            key = value
        elif canary.sticky.startswith("field:") and isinstance(doc, dict):
            key = doc.get(canary.sticky[len("field:"):])  # e.g. the caller's id
        if key is not None:
            digest = hashlib.blake2b(repr(key).encode("utf-8", "replace"), digest_size=8).digest()
            draw = int.from_bytes(digest, "big") / 2 ** 64
        else:
            draw = random.random()
        return canary.version if draw < canary.share else self.default

    def add_member(self, name: str, expert: Expert, batcher: MicroBatcher) -> None:
        """Serve another expert of the server (e.g. a learner) as a member named ``name``: it may
        shadow the default, take a canary share, or be promoted; it is never unloaded."""
        self.experts = {**self.experts, name: expert}
        self.batchers[name] = batcher
        self.members.add(name)

    def resolve(self, version: str | None) -> str:
        """The served version a call naming ``version`` (a number, a label or None) gets."""
        if version is None:
            return self.default
        if version in self.experts:
            return version
        labelled = self.labels.get(version)
        if labelled is not None and labelled in self.experts:
            return labelled
        raise UnknownExpert(f"expert {self.name!r} serves no version {shown(version)!r}; "
                            f"served: {self.served_text()}")

    def resolve_loaded(self, version: str) -> str:
        """Like ``resolve``, for an admin method: ``VersionRefused`` if it is not served."""
        try:
            return self.resolve(version)
        except UnknownExpert as exc:
            raise VersionRefused(str(exc)) from None

    def summary(self) -> dict:
        """What an admin method answers: ``{name, versions, default, labels, shadow, canary}``."""
        return {"name": self.name, "versions": list(self.experts), "default": self.default,
                "labels": {label: v for label, v in self.labels.items() if v in self.experts},
                **self.policy()}

    def served_text(self) -> str:
        """``2 (stable), 3 (canary)``: the versions and their labels, for messages."""
        parts = []
        for version in self.experts:
            labels = [label for label, v in self.labels.items() if v == version]
            parts.append(version + (f" ({', '.join(labels)})" if labels else ""))
        return ", ".join(parts)

    def describe(self) -> list[dict]:
        """What ``experts()`` lists for each version: version, labels, default, metrics."""
        return [{"version": version,
                 "labels": [label for label, v in self.labels.items() if v == version],
                 "default": version == self.default,
                 "metrics": expert.metrics(),
                 **({"expert": version, "learns": expert.learns} if version in self.members
                    else {})}
                for version, expert in self.experts.items()]


def carried_version(doc: Any, name: str) -> Any:
    """The version a document says made its opinion of ``name`` (``versions.<name>``), or None."""
    versions = doc.get("versions") if isinstance(doc, dict) else None
    return versions.get(name) if isinstance(versions, dict) else None
