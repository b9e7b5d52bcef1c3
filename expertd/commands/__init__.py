"""Server administration commands: ``expertd status``, ``stop``, ``reload`` and ``keygen``.

Entry points, like ``expertd.cli`` and ``expertd.group``: each module is
imported only when its command runs, and may import any part of expertd. What
they do to processes is ``expertd.control``'s; what keys look like is
``expertd.keys``'.
"""
