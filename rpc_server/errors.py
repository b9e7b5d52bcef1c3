"""The errors the server sends back; each class name is the RemoteError name a client sees.

The classes are made from the error catalogue in ``expertd/protocol.json``
(one per ``side: server`` entry, its ``summary`` as docstring), so a name,
its HTTP status, retry rule, scope and the pipe's exit code are written once;
``tests/unit/expertd/test_spec.py`` checks that they are all here.
"""

from expertd.spec import ERRORS, kind


class ExpertdError(Exception):
    """Base of the errors that describe a bad request (the server keeps serving)."""

    @property
    def retryable(self) -> bool:
        """Whether the catalogue says a caller may ask again."""
        return kind(type(self).__name__).retryable


def _make(name: str, summary: str) -> type[ExpertdError]:
    return type(name, (ExpertdError,), {"__doc__": summary, "__module__": __name__,
                                         "__qualname__": name})


#: Every server-side error class of the catalogue, by name.
CLASSES: dict[str, type[ExpertdError]] = {
    name: _make(name, entry.summary) for name, entry in ERRORS.items() if entry.side == "server"}
globals().update(CLASSES)

__all__ = ["CLASSES", "ExpertdError", "error_info", *CLASSES]


def error_info(exc: BaseException) -> dict:
    """The ``{"name", "message"}`` form of an error, as put under ``errors.<expert>``."""
    return {"name": type(exc).__name__, "message": str(exc)}
