"""The errors the server sends back; each class name is the RemoteError name a client sees."""


class ExpertdError(Exception):
    """Base of the errors that describe a bad request (the server keeps serving)."""


class UnknownExpert(ExpertdError):
    """The request names an expert this server does not run."""


class InvalidDocument(ExpertdError):
    """The document is not a JSON object, or its field is missing or of the wrong type."""


class TextTooLong(ExpertdError):
    """The field an expert reads is over the server's size limit."""


class BadArguments(ExpertdError):
    """The RPC call has the wrong number or kind of arguments."""


class ExpertFailed(ExpertdError):
    """The expert itself raised while forming its opinion."""


class ShuttingDown(ExpertdError):
    """The server is draining in-flight calls before it exits."""


def error_info(exc: BaseException) -> dict:
    """The ``{"name", "message"}`` form of an error, as put under ``errors.<expert>``."""
    return {"name": type(exc).__name__, "message": str(exc)}


class UnknownMethod(ExpertdError):
    """The RPC call names a method (or expert) the server does not have."""
