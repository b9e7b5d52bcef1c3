"""The ``expertd`` command: dispatches to the server and client subcommands."""

__version__ = "0.1.0"
