"""The one parser of expert names in calls: ``NAME`` or ``NAME@VERSION``.

The grammar is in ``protocol.json`` (``names``), shared with the bridge's
``src/names.js``; both answer every case of ``tests/corpus/expert_names.json``
the same way. A numbered version is written without leading zeros in the
answer (``sentiment@03`` names version ``3``).
"""

from __future__ import annotations

from expertd import jsonc
from expertd.records import record
from expertd.spec import RAW

_NAMES = RAW["names"]
SEPARATOR: str = _NAMES["separator"]
#: The name grammar ``_plain_name`` implements without ``re`` (which costs every pipe stage a
#: few ms to import); used only while protocol.json's ``names.name`` is exactly this.
_PLAIN_NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_]*$"
MAX_LENGTH: int = _NAMES["max_length"]


# expertd.records.record, not collections.namedtuple (nor typing.NamedTuple): the pipe stage starts faster.
class ExpertRef(record("ExpertRef", "name version", defaults=(None,))):
    """An expert named in a call (``name``, a str), and the ``version`` it asks for (a str;
    ``None``: the routing policy's)."""

    __slots__ = ()

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}{SEPARATOR}{self.version}"


def parse_ref(text: str) -> ExpertRef:
    """``"sentiment"`` or ``"sentiment@3"`` / ``"sentiment@canary"`` as an ``ExpertRef``.

    Raises ``ValueError`` with a one-line message that says what is wrong.
    """
    if not isinstance(text, str):
        raise ValueError(f"an expert name must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"an expert name is at most {MAX_LENGTH} characters, got {len(text)}")
    name, sep, version = text.partition(SEPARATOR)
    if not _is_name(name):
        raise ValueError(f"{_quoted(text)} is not an expert name (a letter, then letters, digits "
                         f"or _; optionally {SEPARATOR}VERSION)")
    if not sep:
        return ExpertRef(name)
    if not _fullmatch(_NAMES["version"], version):
        raise ValueError(f"{_quoted(text)}: the version after {SEPARATOR} must be a number or a "
                         f"label (a letter, then letters, digits, _ or -)")
    return ExpertRef(name, str(int(version)) if version.isdigit() else version)


def _plain_name(text: str) -> bool:
    """``_PLAIN_NAME_PATTERN`` without ``re``: an ASCII identifier that does not start with _."""
    return text.isascii() and text.isidentifier() and not text.startswith("_")


def _fullmatch(pattern: str, text: str) -> bool:
    import re  # only for versions and names the plain check refuses

    return re.fullmatch(pattern, text) is not None  # re caches the compiled pattern


def _is_name(text: str) -> bool:
    """Does ``text`` match protocol.json's ``names.name``?"""
    if _NAMES["name"] == _PLAIN_NAME_PATTERN and _plain_name(text):
        return True
    return _fullmatch(_NAMES["name"], text)


def _quoted(text: str) -> str:
    """``text`` in double quotes, as JSON writes it (the same in Python and Node)."""
    return jsonc.dumps(text)


def base_name(text: str) -> str:
    """The expert's name in an already checked ``NAME`` or ``NAME@VERSION``."""
    return text.partition(SEPARATOR)[0]
