"""Clients of expertd: the Python client and the command-line pipe stage.

They speak only the RPC protocol and never import the server, the experts or
TensorFlow. ``ExpertsClient`` is imported lazily so that the pipe stage, which
imports this package, does not pay for zerorpc and gevent.
"""

__all__ = ["DEFAULT_ENDPOINT", "ExpertsClient"]

#: Where clients look for the server when neither an argument nor EXPERTD_ENDPOINT says.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:4242"


def __getattr__(name):
    if name == "ExpertsClient":
        from expertd.clients.client import ExpertsClient

        return ExpertsClient
    raise AttributeError(name)
