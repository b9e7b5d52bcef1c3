"""Hostile zerorpc events: what a peer on the RPC port can send (issue 8's corpus).

Each entry is ``name: (frames, answer)``: the ZeroMQ frames a DEALER sends
(the ROUTER adds the identity), and the reply the server owes: the name of the
reply's error (``MalformedEvent`` when a message id can be read), ``"OK"`` for
a strange but valid call, or ``None`` when it must drop the event. Grow this
list whenever a new way to upset the server is found.
"""

import msgpack

ID = "hostile-0001"


def event(header, name="opinion", args=None) -> list[bytes]:
    """``["", msgpack([header, name, args])]``, zerorpc's framing."""
    return [b"", msgpack.packb([header, name, ["vader", {"text": "x"}] if args is None else args],
                               use_bin_type=True)]


def raw(payload) -> list[bytes]:
    """A payload that is msgpack of anything, in zerorpc's framing."""
    return [b"", msgpack.packb(payload, use_bin_type=True)]


H = {"message_id": ID, "v": 3}

EVENTS = {
    # The two that killed zerorpc's dispatcher for good.
    "response_to_is_a_list": (event({"message_id": ID, "v": 3, "response_to": [1, 2]}), None),
    "response_to_is_a_map": (event({"message_id": ID, "v": 3, "response_to": {"a": 1}}), None),
    "response_to_is_an_int": (event({"message_id": ID, "v": 3, "response_to": 7}), None),
    # Not an event at all.
    "not_msgpack": ([b"", b"\xc1\xc1\xc1 not msgpack"], None),
    "truncated_msgpack": ([b"", msgpack.packb([H, "opinion", ["x"]])[:-3]], None),
    "empty_payload": ([b"", b""], None),
    "an_integer": (raw(42), None),
    "a_string": (raw("hello"), None),
    "two_items": (raw([H, "opinion"]), None),
    "four_items": (raw([H, "opinion", [], "extra"]), None),
    "one_frame_only": ([msgpack.packb([H, "opinion", ["vader", {"text": "x"}]])], "OK"),
    "three_frames": ([b"", b"", msgpack.packb([H, "opinion", ["vader", {"text": "x"}]])], "OK"),
    # Headers.
    "header_is_a_list": (event([ID, 3]), None),
    "header_is_an_int": (event(5), None),
    "header_is_empty": (event({}), None),
    "message_id_is_an_int": (event({"message_id": 5, "v": 3}), None),
    "message_id_is_a_list": (event({"message_id": [1], "v": 3}), None),
    "message_id_is_a_map": (event({"message_id": {"k": 1}, "v": 3}), None),
    "v_is_a_string": (event({"message_id": ID, "v": "3"}), "MalformedEvent"),
    "v_is_a_list": (event({"message_id": ID, "v": [3]}), "MalformedEvent"),
    "header_has_int_keys": (event({"message_id": ID, "v": 3, 1: 2}), "OK"),
    # Names and arguments.
    "name_is_an_int": (event(H, name=5), "MalformedEvent"),
    "name_is_null": (event(H, name=None), "MalformedEvent"),
    "name_is_a_list": (event(H, name=["opinion"]), "MalformedEvent"),
    "name_is_huge": (event(H, name="x" * 1_000_000), "UnknownMethod"),
    "args_is_a_map": (event(H, args={"name": "vader"}), "MalformedEvent"),
    "args_is_an_int": (event(H, args=3), "MalformedEvent"),
    "args_is_a_string": (event(H, args="vader"), "MalformedEvent"),
    "args_is_null": (raw([H, "opinion", None]), "MalformedEvent"),
    "stray_heartbeat": (event(H, name="_zpc_hb", args=[0]), None),
    "stray_more": (event(H, name="_zpc_more", args=[5]), None),
    "reply_to_nobody": (event({"message_id": ID, "v": 3, "response_to": "nobody"}, name="OK"), None),
}

# Big events (over ``rpc_server.incremental.BIG_FRAME``) are decoded a slice at a
# time in a greenlet of their own: the same answers are owed.
BIG_DOCS = [{"text": "x" * 300}] * 600  # few objects, so that memory stays put
_BIG_BATCH = msgpack.packb([H, "batch", ["poison", BIG_DOCS]], use_bin_type=True)
EVENTS.update({
    "big_batch": ([b"", _BIG_BATCH], "OK"),
    "big_truncated": ([b"", _BIG_BATCH[:-5]], None),
    "big_with_extra_bytes": ([b"", _BIG_BATCH + b"\x00"], None),
    "big_header_is_a_list": (event([ID, 3], name="batch", args=["poison", BIG_DOCS]), None),
    "big_name_is_an_int": (event(H, name=7, args=["poison", BIG_DOCS]), "MalformedEvent"),
    "big_args_is_a_map": (event(H, name="batch", args={"docs": BIG_DOCS}), "MalformedEvent"),
    "big_list_of_non_documents": (event(H, name="batch", args=["poison", ["x" * 300] * 600]),
                                  "InvalidDocument"),
    "big_nested_lists": (event(H, name="batch", args=["poison", [[1, ["x" * 300]]] * 600]),
                         "InvalidDocument"),
    "big_two_items": (raw([H, "batch" * 40_000]), None),
    "big_array16_event": ([b"", b"\xdc\x00\x03" + _BIG_BATCH[1:]], "OK"),
})

# Found while moving the dispatcher into rpc_server/transport/dispatch.py.
EVENTS.update({
    "header_is_null": (event(None), None),
    "message_id_is_null": (event({"message_id": None, "v": 3}), None),
    # zerorpc would start a new call for a null response_to; it is no call id.
    "response_to_is_null": (event({"message_id": ID, "v": 3, "response_to": None}), None),
    "response_to_is_a_float": (event({"message_id": ID, "v": 3, "response_to": 1.5}), None),
    "response_to_is_bytes_of_nobody": (event({"message_id": ID, "v": 3, "response_to": b"x"}), None),
    "v_is_a_bool": (event({"message_id": ID, "v": True}), "MalformedEvent"),
    "v_is_null": (event({"message_id": ID, "v": None}), "MalformedEvent"),
    "args_is_bytes": (event(H, args=b"vader"), "MalformedEvent"),
    # A map key that is a list: msgpack cannot even build the header (unhashable).
    "header_has_a_list_key": ([b"", b"\x93\x81\x91\x01\x01" + msgpack.packb("opinion")
                               + msgpack.packb(["vader", {"text": "x"}])], None),
    "no_frames_but_the_delimiter": ([b""], None),
})


def flood(call_id: str, count: int = 150) -> list[list[bytes]]:
    """``count`` events addressed to the call ``call_id`` (zerorpc's dispatcher blocked on 150)."""
    return [[b"", msgpack.packb([{"message_id": f"f{i}", "v": 3, "response_to": call_id},
                                 "_zpc_more", [1]])] for i in range(count)]
