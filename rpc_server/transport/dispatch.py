"""A zerorpc channel dispatcher that no peer can stop.

zerorpc 0.6.3 routes every incoming event from one greenlet
(``ChannelMultiplexer._channel_dispatcher``). Measured: an event whose header
has a list as ``response_to`` raises ``TypeError`` there and kills it, and 150
events addressed to one busy channel block it for good; either way the
process stays up and answers nobody. ``GuardedMultiplexer`` replaces that
greenlet with one that checks every event before routing it:

* an event that is not ``[header, name, args]`` with a map header, a string or
  bytes ``message_id``, a string name and a list of args is answered
  ``MalformedEvent`` when its message id can be read, and otherwise dropped;
* an event for a channel is delivered only if it comes from that channel's
  peer and the channel has room; otherwise it is dropped (it can only cost its
  own call, never the dispatcher);
* a big event (a 100,000-document call) is decoded in a greenlet of its own,
  a slice at a time, and a big reply is encoded the same way
  (``incremental``), so that other calls are received and answered meanwhile;
* nothing it logs grows with what the peer sent (``logsafe``).
"""

from __future__ import annotations

import logging

from typing import Any

import gevent
import gevent.pool
import gevent.queue
import msgpack
import zmq
from zerorpc.channel import Channel, ChannelMultiplexer
from zerorpc.events import Event

from expertd.rpc_server import incremental, runtime
from expertd.rpc_server.logsafe import RateLimitedLog, shown
from expertd.spec import ERROR

log = logging.getLogger("expertd.guard")

#: Events a channel may hold before more are dropped (zerorpc's own is 1, and blocks).
CHANNEL_QUEUE = 32
#: Big events decoded at once, each in its own greenlet (the dispatcher waits beyond that).
BIG_DECODERS = 4
_ID_TYPES = (str, bytes)


def split(parts: list) -> tuple[list | None, Any]:
    """The identity frames and the payload of a ROUTER message."""
    if len(parts) > 2:
        identity, blob = parts[0:-2], parts[-1]
    elif len(parts) == 2:
        identity, blob = parts[0:-1], parts[-1]
    else:
        identity, blob = None, parts[0]
    return identity, (blob.buffer if hasattr(blob, "buffer") else blob)


def decode(parts: list) -> Event:
    """The zerorpc event in a ROUTER message (identity frames, empty delimiter, payload).

    Stricter than zerorpc about the shape, laxer about map keys (so that a
    header with an integer key still yields a message id to answer). A big
    payload is decoded a slice at a time (``incremental.unpack``), yielding
    the gevent loop: call it from a greenlet of its own.
    """
    identity, blob = split(parts)
    if len(blob) >= incremental.BIG_FRAME:
        unpacked = incremental.unpack(blob)
    else:
        unpacked = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    if not isinstance(unpacked, (list, tuple)) or len(unpacked) != 3:
        raise ValueError(f"an event must be [header, name, args], got {type(unpacked).__name__}"
                         f"{' of ' + str(len(unpacked)) if isinstance(unpacked, (list, tuple)) else ''}")
    header, name, args = unpacked
    event = Event(name, args, None, header if isinstance(header, dict) else {})
    event.identity = identity
    return event


def malformation(event) -> str | None:
    """What is wrong with a decoded event's header, name or args (``None`` if nothing)."""
    header = event.header
    if not isinstance(header, dict) or not header:
        return "the header is not a map"
    if not isinstance(header.get("message_id"), _ID_TYPES):
        return "the header has no string message_id"
    if "response_to" in header and not isinstance(header["response_to"], _ID_TYPES):
        return "response_to is not a string"
    if not isinstance(header.get("v", 3), int) or isinstance(header.get("v", 3), bool):
        return "v is not an integer"
    if not isinstance(event.name, str):
        return "the event name is not a string"
    if not isinstance(event.args, (list, tuple)):
        return "args is not a list"
    return None


class GuardedChannel(Channel):
    """A zerorpc channel with a bounded queue that the dispatcher never waits on."""

    def __init__(self, multiplexer, from_event=None) -> None:
        """As ``Channel``, with room for ``CHANNEL_QUEUE`` events."""
        super().__init__(multiplexer, None)
        self._queue = gevent.queue.Queue(maxsize=CHANNEL_QUEUE)
        if from_event is not None:
            self._channel_id = from_event.header["message_id"]
            self._zmqid = from_event.identity
            multiplexer._active_channels[self._channel_id] = self
            self._queue.put(from_event)

    def close(self) -> None:
        """Forget the channel (idempotent)."""
        if self._channel_id is not None:
            self._multiplexer._active_channels.pop(self._channel_id, None)
            self._channel_id = None


class GuardedMultiplexer(ChannelMultiplexer):
    """``ChannelMultiplexer`` whose dispatcher survives any event and never blocks."""

    def __init__(self, events) -> None:
        """Dispatch the events of ``events`` (the server's ROUTER socket)."""
        self._noisy = RateLimitedLog(log)
        self.dropped = 0
        self._big = gevent.pool.Pool(BIG_DECODERS)
        super().__init__(events)

    def close(self) -> None:
        """Stop the dispatcher and any big event still being decoded."""
        self._big.kill()
        super().close()

    def channel(self, from_event=None) -> GuardedChannel:
        """A new channel (for a call that ``from_event`` starts)."""
        return GuardedChannel(self, from_event)

    def _channel_dispatcher(self) -> None:
        while True:
            try:
                parts = self._events._recv()
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                self._drop("recv", "error receiving an event: %s", shown(str(exc)))
                continue
            try:
                big = len(split(parts)[1]) >= incremental.BIG_FRAME
            except Exception:  # noqa: BLE001 - a frame without a length: decode() will say
                big = False
            if big:
                self._big.spawn(self._receive_big, parts)
            else:
                self._receive(parts)

    def _receive_big(self, parts: list) -> None:
        """``_receive`` for a big frame, with the GIL switched often meanwhile (``runtime``)."""
        with runtime.big_call():
            self._receive(parts)

    def _receive(self, parts: list) -> None:
        """Decode and route one ROUTER message; whatever fails costs only this event."""
        try:
            event = decode(parts)
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # not msgpack, not a 3-list, ...
            self._drop("undecodable", "dropped an undecodable event: %s", shown(str(exc)))
            return
        try:
            self._route(event)
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # never let one event end the dispatcher
            self._drop("routing", "dropped an event that failed to route: %s: %s",
                       type(exc).__name__, shown(str(exc)))

    def emit_event(self, event, timeout=None):
        """Send ``event``; one holding a long list (a big answer) is encoded a slice at a time.

        Only the answer of a big call (``runtime.BIG_CALL_DOCS``) switches the GIL
        often and hands memory back after it: for a 1,000-document answer that
        cost more than it saved (a heap trim every half second under a loop of them).
        """
        if not incremental.is_big(event.args):
            return self._events.emit_event(event, timeout)
        with runtime.big_call_if(incremental.longest(event.args)):
            blob = incremental.pack(event.header, event.name, event.args)
        if event.identity:
            parts = [*event.identity, b"", blob]
        elif self._events._zmq_socket_type in (zmq.DEALER, zmq.ROUTER):
            parts = [b"", blob]
        else:
            parts = [blob]
        self._events._send(parts, timeout)
        return None

    def _route(self, event) -> None:
        problem = malformation(event)
        if problem is not None:
            self._refuse(event, problem)
            return
        channel_id = event.header.get("response_to")
        if channel_id is None:
            if event.name.startswith("_zpc_"):
                self._drop("stray", "dropped a %s event that answers no call", shown(event.name))
                return
            if self._broadcast_queue is not None:
                self._broadcast_queue.put(event)
            return
        channel = self._active_channels.get(channel_id)
        if channel is None:
            # Late heartbeats of a call that just ended are normal: debug only.
            log.debug("no channel for an event %s", shown(event.name))
            return
        if channel._zmqid is not None and event.identity is not None and \
                [bytes(p) for p in channel._zmqid] != [bytes(p) for p in event.identity]:
            self._drop("foreign", "dropped an event addressed to another peer's call")
            return
        try:
            channel._queue.put_nowait(event)
        except gevent.queue.Full:
            self._drop("full", "dropped an event for a call whose queue is full (%d events)",
                       CHANNEL_QUEUE)

    def _refuse(self, event, problem: str) -> None:
        """Answer ``MalformedEvent`` if the event's message id can be read; else drop it."""
        header = event.header if isinstance(event.header, dict) else {}
        message_id = header.get("message_id")
        if not isinstance(message_id, _ID_TYPES) or "response_to" in header:
            self._drop("malformed", "dropped a malformed event: %s", problem)
            return
        self._drop("malformed", "answered a malformed event with MalformedEvent: %s", problem)
        message = (f"malformed zerorpc event: {problem}; send [header, name, args] with a map "
                   f"header holding a string message_id, a string name and a list of args")
        name = ERROR.MalformedEvent
        reply = self._events.new_event("ERR", [name, message, f"{name}: {message}"])
        reply.header["response_to"] = message_id
        reply.identity = event.identity
        self._events.emit_event(reply)

    def _drop(self, key: str, message: str, *args) -> None:
        self.dropped += 1
        self._noisy.warning(key, message, *args)
