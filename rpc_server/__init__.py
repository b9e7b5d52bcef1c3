"""expertd's ZeroRPC server: loads every expert once and answers over ZeroRPC."""

from importlib.metadata import version

__version__ = version("expertd")
