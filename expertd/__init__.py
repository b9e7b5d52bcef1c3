"""The ``expertd`` command: dispatches to the server and client subcommands."""
