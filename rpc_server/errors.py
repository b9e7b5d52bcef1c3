"""The errors the server sends back; each class name is the RemoteError name a client sees.

Their HTTP status, retry rule, scope and the pipe's exit code live in the one
catalogue, ``expertd/errors.json``; ``tests/unit/expertd/test_catalogue.py`` checks that the
classes here and the catalogue's server-side names are the same set.
"""

from expertd.catalogue import kind


class ExpertdError(Exception):
    """Base of the errors that describe a bad request (the server keeps serving)."""

    @property
    def retryable(self) -> bool:
        """Whether the catalogue says a caller may ask again."""
        return kind(type(self).__name__).retryable


class UnknownExpert(ExpertdError):
    """The request names an expert this server does not run."""


class UnknownMethod(ExpertdError):
    """The RPC call names a method (or expert) the server does not have."""


class InvalidDocument(ExpertdError):
    """The document is not a JSON object, or its field is missing or of the wrong type."""


class TextTooLong(ExpertdError):
    """The field an expert reads is over the server's size limit."""


class BadArguments(ExpertdError):
    """The RPC call has the wrong number or kind of arguments."""


class TooManyDocuments(ExpertdError):
    """A call carries more documents than ``max_batch_docs``."""


class MalformedEvent(ExpertdError):
    """A zerorpc event that is not ``[header, name, args]`` of the right types."""


class ExpertFailed(ExpertdError):
    """The expert itself raised (or returned something that is not an opinion)."""


class DependencyFailed(ExpertdError):
    """An expert this one builds on failed for this document."""


class NotLearnable(ExpertdError):
    """Examples were sent to an expert that does not learn."""


class Overloaded(ExpertdError):
    """The server cannot take (or could not finish in time) this request; retry later."""


class ShuttingDown(ExpertdError):
    """The server is draining in-flight calls before it exits."""


class InternalError(ExpertdError):
    """A bug in expertd; the caller gets an id to find the traceback in the server log."""


def error_info(exc: BaseException) -> dict:
    """The ``{"name", "message"}`` form of an error, as put under ``errors.<expert>``."""
    return {"name": type(exc).__name__, "message": str(exc)}
