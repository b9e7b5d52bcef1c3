"""``rpc_server.runtime``: the short GIL switch interval only while a big call is served."""

from __future__ import annotations

import gc
import sys

import pytest
import zerorpc

from expertd.rpc_server import runtime
from tests.conftest import ServerProcess


@pytest.fixture
def tuned():
    """``runtime.tune()`` in this process, undone afterwards."""
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    runtime.tune()
    yield
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)


def test_big_call_nests_and_restores_the_normal_interval(tuned):
    assert sys.getswitchinterval() == runtime.NORMAL_SWITCH_INTERVAL
    with runtime.big_call():
        assert sys.getswitchinterval() == runtime.SWITCH_INTERVAL
        with runtime.big_call():  # a second big call at once
            assert sys.getswitchinterval() == runtime.SWITCH_INTERVAL
        assert sys.getswitchinterval() == runtime.SWITCH_INTERVAL  # the first still runs
    assert sys.getswitchinterval() == runtime.NORMAL_SWITCH_INTERVAL
    with runtime.big_call_if(runtime.BIG_CALL_DOCS):
        assert sys.getswitchinterval() == runtime.NORMAL_SWITCH_INTERVAL
    try:
        with runtime.big_call_if(runtime.BIG_CALL_DOCS + 1):
            assert sys.getswitchinterval() == runtime.SWITCH_INTERVAL
            raise KeyError("a failing call")
    except KeyError:
        pass
    assert sys.getswitchinterval() == runtime.NORMAL_SWITCH_INTERVAL


def test_a_served_expert_runs_at_1_ms_only_inside_a_big_call(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  switch: tests.runtime_experts:SwitchInterval\n")
    server = ServerProcess(config, tmp_path)
    try:
        client = zerorpc.Client(server.endpoint, timeout=60)
        small = client.opinions_batch([{"text": "x"}] * 10, ["switch"])
        big = client.opinions_batch([{"text": "x"}] * 3000, ["switch"])
        after = client.opinion("switch", {"text": "x"})
        client.close()
    finally:
        assert server.stop() == 0, server.read_log()
    normal, short = runtime.NORMAL_SWITCH_INTERVAL * 1000, runtime.SWITCH_INTERVAL * 1000
    assert {d["opinions"]["switch"]["switch_ms"] for d in small} == {normal}
    assert {d["opinions"]["switch"]["switch_ms"] for d in big} == {short}
    assert after["switch_ms"] == normal  # restored once no big call is served
