"""The error catalogue is the one place error names, statuses and retry rules live."""

import inspect
import json
import subprocess

from expertd import catalogue
from rpc_server import errors

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
