"""``python -m clients.pipe``: the pipe stage."""

from clients.pipe import main

main()
