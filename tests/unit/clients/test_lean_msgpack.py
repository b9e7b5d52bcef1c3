"""``clients.lean_msgpack`` against the real msgpack: the same bytes, the same values, and
msgpack's own answer for everything outside what it handles."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expertd.clients import lean_msgpack as lean
from expertd.clients.lean_msgpack import NotLean, pure_packb, pure_unpackb


def real_packb(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def real_unpackb(data: bytes):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN and the types checked too (True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


# -- values at every boundary of the formats ---------------------------------------------

INT_EDGES = sorted(value for value in {sign * ((1 << bits) + delta)
                                        for bits in (0, 4, 5, 6, 7, 8, 15, 16, 31, 32, 63, 64)
                                        for delta in (-1, 0, 1) for sign in (1, -1)} | {0}
                   if -(1 << 63) <= value < 1 << 64)
LENGTH_EDGES = (0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536)
FLOATS = (0.0, -0.0, 1.5, -2.25, 1e308, -1e-308, 5e-324, float("inf"), float("-inf"), float("nan"),
          0.1, 1 / 3)


@pytest.mark.parametrize("value", INT_EDGES)
def test_every_integer_width_boundary_encodes_as_msgpack_does(value):
    assert pure_packb(value) == real_packb(value)
    assert same(pure_unpackb(real_packb(value)), value)


@pytest.mark.parametrize("value", FLOATS)
def test_floats_and_their_special_values(value):
    assert pure_packb(value) == real_packb(value)
    assert same(pure_unpackb(real_packb(value)), value)


def test_float_32_is_read_as_msgpack_reads_it():
    data = msgpack.packb(1.1, use_single_float=True)
    assert pure_unpackb(data) == real_unpackb(data)


@pytest.mark.parametrize("length", LENGTH_EDGES)
def test_str_bin_array_and_map_length_boundaries(length, monkeypatch):
    monkeypatch.setattr(lean, "PURE_BUDGET", 1 << 20)  # the 16- and 32-bit forms are reached
    monkeypatch.setattr(lean, "MAX_PARTS", 1 << 20)
    values = ["x" * length, "\u00e9" * (length // 2), b"\x00" * length, list(range(length)),
              {f"k{i}": i for i in range(length)}, tuple(range(min(length, 40)))]
    for value in values:
        assert pure_packb(value) == real_packb(value), (type(value), length)
        assert same(pure_unpackb(real_packb(value)), real_unpackb(real_packb(value)))


def test_constants_empty_containers_and_non_ascii():
    for value in (None, True, False, [], {}, "", b"", {"": [{}, [[]]]}, "I \u2764 \U0001f600",
                  {"caf\u00e9": ["\u4e2d\u6587", -1, 2.5, None, True]}):
        assert pure_packb(value) == real_packb(value)
        assert same(pure_unpackb(real_packb(value)), real_unpackb(real_packb(value)))


def test_a_request_event_and_a_reply_envelope():
    header = {"message_id": "ab" * 16, "v": 3, "expertd_timeout_ms": 30000}
    request = [header, "opinions_batch", [[{"id": 1, "text": "I love it"}], ["sentiment"],
                                          {"only_opinions": True}]]
    reply = [{"message_id": "cd" * 16, "v": 3, "response_to": "ab" * 16}, "OK",
             [[{"opinions": {"sentiment": {"valence": 0.7254, "label": "positive",
                                           "confidence": 0.5823}}}]]]
    for event in (request, reply):
        assert pure_packb(event) == real_packb(event)
        assert same(pure_unpackb(real_packb(event)), event)


# -- what it leaves to msgpack -------------------------------------------------------------

class Text(str):
    pass


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1, "\ud83d", {"a": "\udc00"}, Text("x"),
                                   {1, 2}, bytearray(b"x"), 1 + 2j, object(),
                                   "x" * (lean.PURE_BUDGET + 1)])
def test_what_it_does_not_handle_is_not_lean(value):
    with pytest.raises(NotLean):
        pure_packb(value)


def nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_deep_nesting_is_left_to_msgpack():
    assert pure_packb(nested(lean.MAX_DEPTH - 1)) == real_packb(nested(lean.MAX_DEPTH - 1))
    with pytest.raises(NotLean):
        pure_packb(nested(lean.MAX_DEPTH + 1))
    with pytest.raises(NotLean):
        pure_unpackb(real_packb(nested(lean.MAX_DEPTH + 1)))


def test_packb_and_packer_answer_what_msgpack_answers(monkeypatch):
    """The public functions (msgpack imported or not) give msgpack's bytes and its errors."""
    monkeypatch.setattr(lean, "_pure_allowed", lambda size=0: True)
    packer = lean.Packer(use_bin_type=True)
    for value in ({"id": 1}, [1 << 64], nested(600), Text("x")):
        try:
            expected = real_packb(value)
        except Exception as exc:  # noqa: BLE001
            with pytest.raises(type(exc)):
                lean.packb(value)
            with pytest.raises(type(exc)):
                lean.Packer().pack(value)
        else:
            assert lean.packb(value) == expected
            assert packer.pack(value) == expected
    with pytest.raises(UnicodeEncodeError) as caught:
        lean.packb({"text": "half \ud83d"})
    assert caught.value.object[caught.value.start:caught.value.end] == "\ud83d"
    with pytest.raises(OverflowError):
        lean.packb({"n": 1 << 64})


def test_msgpack_s_defaults_other_options_and_other_names_are_msgpack_s(monkeypatch):
    monkeypatch.setattr(lean, "_pure_allowed", lambda size=0: True)
    int_keys = real_packb({1: "a"})
    with pytest.raises(ValueError):  # strict_map_key=True, msgpack's default
        msgpack.unpackb(int_keys)
    with pytest.raises(ValueError):
        lean.unpackb(int_keys)
    assert lean.unpackb(int_keys, strict_map_key=False) == {1: "a"}
    assert lean.unpackb(real_packb({"a": b"x"})) == {"a": b"x"}
    assert lean.unpackb(b"\xa1a", raw=True) == b"a"
    assert lean.packb(1.5, use_single_float=True) == msgpack.packb(1.5, use_single_float=True)
    assert lean.packb("x", use_bin_type=False) == msgpack.packb("x", use_bin_type=False)
    packer = lean.Packer(autoreset=False)
    packer.pack([1])
    assert packer.bytes() == real_packb([1])
    assert lean.ExtType is msgpack.ExtType and lean.Unpacker is msgpack.Unpacker


GARBLED = [b"", b"\x92\x01", b"\xa5abc", b"\xcd\x01", b"\xcb\x00\x00", b"\xdc\xff\xff\x01",
           b"\x81\xa1a", b"\xc1", b"\xd4\x01\x02", b"\xc7\x01\x05x", b"\x01\x02",
           b"\xa2\xff\xfe", b"\x81\x91\x01\x02", b"\x81\x80\x01", b"\xd9\x05ab",
           real_packb({"a": 1})[:-1], real_packb(["x" * 40])[:-3]]


@pytest.mark.parametrize("data", GARBLED)
def test_truncated_garbled_or_extended_input_is_not_lean_and_unpackb_says_what_msgpack_says(
        data, monkeypatch):
    with pytest.raises(NotLean):
        pure_unpackb(data)
    monkeypatch.setattr(lean, "_pure_allowed", lambda size=0: True)
    try:
        expected = real_unpackb(data)
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)):
            lean.unpackb(data, raw=False, strict_map_key=False)
    else:
        assert same(lean.unpackb(data, raw=False, strict_map_key=False), expected)


# -- properties --------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
           | st.floats(allow_nan=True) | st.text() | st.binary())
KEYS = st.text() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1) | st.booleans()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(KEYS, inner),
                      max_leaves=60)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_any_value_encodes_byte_for_byte_and_reads_back_as_msgpack_reads_it(value):
    data = real_packb(value)
    assert pure_packb(value) == data
    assert same(pure_unpackb(data), real_unpackb(data))


@settings(max_examples=100, deadline=None, database=None)
@given(VALUES, st.data())
def test_any_cut_or_changed_message_is_read_as_msgpack_reads_it_or_left_to_it(value, data):
    encoded = bytearray(real_packb(value) + b"\x00")
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    if data.draw(st.booleans()):
        del encoded[position:]
    else:
        encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    encoded = bytes(encoded)
    try:
        got = pure_unpackb(encoded)
    except NotLean:
        return
    assert same(got, real_unpackb(encoded))


def test_seeded_random_documents_as_json_gives_them():
    """Hundreds of JSON-like documents of every shape, as a pipe stage reads them."""
    rng = random.Random(28)
    alphabet = "ab \u00e9\u4e2d\U0001f600\n\"\\"

    def value(depth: int):
        kind = rng.randrange(9 if depth < 6 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.choice(INT_EDGES) + rng.choice((0, 0, 1, -1))
        if kind == 3:
            return rng.choice((rng.uniform(-1e6, 1e6), rng.choice(FLOATS)))
        if kind in (4, 5):
            return "".join(rng.choice(alphabet) for _ in range(rng.choice(LENGTH_EDGES[:7])))
        if kind in (6, 7):
            return {f"k{i}{rng.choice(alphabet)}": value(depth + 1) for i in range(rng.randrange(20))}
        return [value(depth + 1) for _ in range(rng.randrange(20))]

    for _ in range(600):
        doc = {"text": value(3), "id": value(5)}
        try:
            data = real_packb(doc)
        except OverflowError:
            with pytest.raises(NotLean):
                pure_packb(doc)
            continue
        assert pure_packb(doc) == data
        assert same(pure_unpackb(data), real_unpackb(data))


# -- when it is used ---------------------------------------------------------------------------

def test_a_fresh_process_uses_plain_python_within_its_budget_then_msgpack():
    """The public functions do without msgpack until the budget is spent, then import it."""
    code = (
        "import sys\n"
        "from expertd.clients import lean_msgpack as lean\n"
        "packer = lean.Packer()\n"
        "doc = {'text': 'x' * 1000}\n"
        "data = packer.pack(doc)\n"
        "assert lean.unpackb(data) == doc\n"
        "assert 'msgpack' not in sys.modules\n"
        "for _ in range(lean.PURE_BUDGET // 1000):\n"
        "    assert packer.pack(doc) == data\n"
        "assert 'msgpack' in sys.modules and packer._real is not None\n"
        "import msgpack\n"
        "assert packer.pack(doc) == msgpack.packb(doc) and lean.unpackb(data) == doc\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_hostile_event_of_the_corpus_reads_as_msgpack_reads_it_or_is_left_to_it():
    """tests/corpus/events.py: what a peer can send on the RPC port (a reply is read the same way)."""
    from tests.corpus.events import EVENTS

    for name, (frames, _) in EVENTS.items():
        for frame in frames:
            try:
                got = pure_unpackb(frame)
            except NotLean:
                continue
            assert same(got, real_unpackb(frame)), name
