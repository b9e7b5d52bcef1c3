"""Graceful ends for a ``transport.Server``: drain (SIGTERM) and retire (a reload).

Both let the calls in flight finish, up to a timeout, and then stop the
server's ``run()``. They differ in what happens to new calls and the listener:

* ``drain``: new calls answer ``ShuttingDown`` (retryable) at once;
* ``retire``: a worker that a newer one replaces closes its listener once no
  call is in flight (libzmq's ``unbind`` also closes the connections it
  accepted, whose callers then reconnect to another worker); new calls keep
  being served until half the timeout has passed, ``ShuttingDown`` after.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import gevent

if TYPE_CHECKING:
    from expertd.rpc_server.transport.server import Server

log = logging.getLogger("expertd.server")

#: A retiring worker first waits this long for calls on connections it just accepted.
RETIRE_GRACE_S = 0.2


def drain(server: Server, timeout: float) -> None:
    """Answer new calls ``ShuttingDown``, wait up to ``timeout`` s for the rest, then stop."""
    server.draining = True
    pending = server.in_flight
    if pending:
        log.info("waiting for %d in-flight calls", pending)
    deadline = time.monotonic() + timeout
    while server.in_flight and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if server.in_flight:
        log.warning("gave up waiting after %.0f s", timeout)
        server.kill_calls()
    server.stop()  # ends run()


def retire(server: Server, endpoint: str, timeout: float, grace: float = RETIRE_GRACE_S) -> None:
    """Close the listener on ``endpoint`` at a moment with no call in flight, finish, stop.

    Waits ``grace`` s first (connections accepted just before bring their
    first call). An idle moment is a check twice 1 ms apart. Not ``ZMQ_EVENTS``:
    reading it from another greenlet eats the edge that wakes zerorpc's
    receiver, which then stalls for a second.
    """
    gevent.sleep(grace)
    patience = time.monotonic() + timeout / 2
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.in_flight and (gevent.sleep(0.001) or not server.in_flight):
            break
        if not server.draining and time.monotonic() > patience:
            log.info("still busy after %.0f s: answering new calls ShuttingDown", timeout / 2)
            server.draining = True
        gevent.sleep(0.002)
    server.unbind(endpoint)
    if server.in_flight:
        log.warning("gave up waiting for %d calls after %.0f s", server.in_flight, timeout)
        server.kill_calls()
    log.info("listener closed; exiting")
    server.stop()
