"""``expertd``: one command for the server and the clients.

``expertd pipe`` must start in milliseconds, so this module imports nothing
heavy: the pipe stage goes straight to ``clients.pipe`` (which parses its
common command lines without click), and every other subcommand goes through
the click group in ``expertd.group``, which imports a subcommand only when it
is the one being run (the server, and TensorFlow, only for ``serve``).
"""

import sys


def main() -> None:
    """Entry point of the ``expertd`` command."""
    if len(sys.argv) > 1 and sys.argv[1] == "pipe":
        try:
            from expertd.clients.pipe import main as pipe_main
        except KeyboardInterrupt:  # Ctrl-C before the stage could read anything
            sys.stderr.write("expertd pipe: stopped by SIGINT while starting, before reading "
                             "any input\n")
            sys.exit(130)
        pipe_main(sys.argv[2:], prog_name="expertd pipe")
        return
    from expertd.group import cli

    cli()


if __name__ == "__main__":
    main()
