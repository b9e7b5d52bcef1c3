"""The error catalogue is the one place error names, statuses and retry rules live."""

import inspect
import json
import subprocess

from expertd import catalogue
from expertd.rpc_server import errors

from tests.conftest import ROOT


def test_server_classes_are_the_catalogue_server_names():
    classes = {name for name, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, errors.ExpertdError) and obj is not errors.ExpertdError}
    server_side = {name for name, k in catalogue.ERRORS.items() if k.side == "server"}
    assert classes == server_side


def test_every_entry_is_complete():
    for name, entry in catalogue.ERRORS.items():
        assert 400 <= entry.status < 600, name
        assert entry.exit in (1, 2, 3), name
        assert entry.hint, name
    assert catalogue.is_retryable("Overloaded") and not catalogue.is_retryable("InvalidDocument")
    assert catalogue.kind("NoSuchName").name == "InternalError"


def test_the_bridge_reads_the_same_file():
    script = ("const {REMOTE_STATUS, RETRYABLE} = require('./src/errors');"
              "console.log(JSON.stringify({status: REMOTE_STATUS, retryable: [...RETRYABLE]}))")
    out = subprocess.run(["node", "-e", script], cwd=ROOT / "express_bridge", check=True,
                         capture_output=True, text=True).stdout
    node = json.loads(out)
    for name, entry in catalogue.ERRORS.items():
        if entry.side == "server":
            assert node["status"][name] == entry.status, name
    assert set(node["retryable"]) == {n for n, k in catalogue.ERRORS.items() if k.retryable}


#: (method, error name, whether it may be asked again), for both sides.
ASK_AGAIN_CASES = [
    ("opinion", "Overloaded", True), ("opinion", "RpcTimeout", True),
    ("opinion", "ServerUnavailable", True), ("opinion", "InvalidDocument", False),
    ("learn", "Overloaded", True), ("learn", "ShuttingDown", True),
    ("learn", "RpcTimeout", False), ("learn", "ServerUnavailable", False),
    ("learn", "NotLearnable", False),
]


def test_a_stateful_call_is_asked_again_only_after_a_refusal_before_it_ran():
    assert catalogue.STATEFUL_METHODS == {"learn"}
    assert catalogue.REFUSED_BEFORE_RUNNING <= {n for n, k in catalogue.ERRORS.items() if k.retryable}
    for method, name, expected in ASK_AGAIN_CASES:
        assert catalogue.may_ask_again(method, name) is expected, (method, name)


def test_the_bridge_applies_the_same_ask_again_rule():
    script = ("const {mayAskAgain} = require('./src/errors');"
              f"const cases = {json.dumps(ASK_AGAIN_CASES)};"
              "console.log(JSON.stringify(cases.map(([m, n]) => mayAskAgain(m, n, true))))")
    out = subprocess.run(["node", "-e", script], cwd=ROOT / "express_bridge", check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out) == [expected for _, _, expected in ASK_AGAIN_CASES]
