"""expertd's ZeroRPC server: loads every expert once and answers over ZeroRPC."""

__version__ = "0.1.0"
