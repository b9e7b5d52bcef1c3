"""Clients of expertd: the Python client and the command-line pipe stage.

They speak only the RPC protocol and never import the server, the experts or
TensorFlow. ``ExpertsClient`` is imported lazily so that the pipe stage, which
imports this package, does not pay for zerorpc and gevent.
"""

from expertd.spec import DEFAULT_ENDPOINT  # where clients look when nothing else says

__all__ = ["DEFAULT_ENDPOINT", "ExpertsClient"]


def __getattr__(name):
    if name == "ExpertsClient":
        from expertd.clients.client import ExpertsClient

        return ExpertsClient
    raise AttributeError(name)
