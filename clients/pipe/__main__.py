"""``python -m expertd.clients.pipe``: the pipe stage."""

from expertd.clients.pipe import main

main()
