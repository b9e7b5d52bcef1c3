"""``expertd.records.record`` behaves as ``collections.namedtuple`` in everything expertd uses."""

from __future__ import annotations

import copy
import pickle
from collections import namedtuple

import pytest

from expertd.records import record
from expertd.spec import ErrorKind, Method
from expertd.tracecontext import TraceParent

FIELDS, DEFAULTS = "transport host port path", (None, None, 4242)
Lean = record("Point", FIELDS, defaults=DEFAULTS)
Stock = namedtuple("Point", FIELDS, defaults=DEFAULTS)


class Sub(record("Sub", "a b", defaults=(2,))):
    """A subclass adding a method, as expertd's records do."""

    __slots__ = ()

    @property
    def total(self) -> int:
        return self.a + self.b


CALLS = [(("tcp",), {}), (("tcp", "h"), {"port": 1}), ((), {"transport": "ipc", "path": "/p"}),
         (("tcp", "h", 1, "/p"), {}), ((), {"path": "/p", "port": 1, "host": "h", "transport": "t"})]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_construction_fields_repr_and_helpers_match_namedtuple(args, kwargs):
    lean, stock = Lean(*args, **kwargs), Stock(*args, **kwargs)
    assert tuple(lean) == tuple(stock) and lean == stock and hash(lean) == hash(stock)
    assert repr(lean) == repr(stock)
    assert [getattr(lean, f) for f in Lean._fields] == [getattr(stock, f) for f in Stock._fields]
    assert lean._fields == stock._fields and lean._field_defaults == stock._field_defaults
    assert lean._asdict() == stock._asdict()
    assert tuple(lean._replace(host="x")) == tuple(stock._replace(host="x"))
    assert tuple(Lean._make(list(stock))) == tuple(stock)
    assert isinstance(lean, tuple) and Lean.__match_args__ == Stock.__match_args__


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), (("a", "b", "c", "d", "e"), {}),
                                              (("a",), {"transport": "b"}), (("a",), {"nope": 1}),
                                              ((), {"transport": 1, "host": 2, "port": 3, "nope": 4})])
def test_wrong_arguments_raise_type_error_as_namedtuple_does(args, kwargs):
    with pytest.raises(TypeError):
        Stock(*args, **kwargs)
    with pytest.raises(TypeError):
        Lean(*args, **kwargs)


def test_fields_are_read_only_and_instances_have_no_dict():
    point = Lean("tcp")
    with pytest.raises(AttributeError):
        point.host = "x"
    with pytest.raises(AttributeError):
        point.other = 1
    with pytest.raises(ValueError):
        point._replace(nope=1)
    with pytest.raises(TypeError):
        Lean._make(["tcp"])


def test_subclasses_pickle_copy_and_match_by_position():
    value = Sub(1)
    assert value.total == 3 and repr(value) == "Sub(a=1, b=2)"
    assert pickle.loads(pickle.dumps(value)) == value and type(copy.copy(value)) is Sub
    match value:
        case Sub(a, b):
            assert (a, b) == (1, 2)
    for spec_value in (TraceParent("a" * 32, "b" * 16), Method("m", ("x?",), False, "r")):
        assert pickle.loads(pickle.dumps(spec_value)) == spec_value
    assert Method("m", (), False, "r").admin is False
    assert ErrorKind.__module__ == "expertd.spec"


@pytest.mark.parametrize("names", ["a _b", "a a", "class x", "a-b", "1a"])
def test_bad_field_names_are_refused(names):
    with pytest.raises(ValueError):
        record("Bad", names)
