"""``from expertd import Expert, ExpertsClient``: the public API from the package itself, lazily."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("zerorpc", "gevent", "zmq", "tensorflow", "yaml", "click", "msgpack")


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_import_expertd_loads_nothing_heavy():
    loaded = json.loads(run("import sys, expertd; print(__import__('json').dumps(sorted(sys.modules)))"))
    assert not {m.partition(".")[0] for m in loaded} & set(HEAVY)
    assert not [m for m in loaded if m.startswith("expertd.")], "the facade imports nothing eagerly"


def test_public_names_resolve_to_their_definitions():
    out = json.loads(run(
        "import json, expertd\n"
        "from expertd import Expert, ExpertsClient, ExpertError, FunctionExpert, __version__\n"
        "from expertd.experts import base\n"
        "from expertd.clients import client\n"
        "from importlib.metadata import version\n"
        "print(json.dumps({'same': [Expert is base.Expert, ExpertsClient is client.ExpertsClient,\n"
        "                           ExpertError is base.ExpertError,\n"
        "                           FunctionExpert is base.FunctionExpert,\n"
        "                           expertd.ServerTimeout is client.ServerTimeout,\n"
        "                           expertd.ServerLost is client.ServerLost],\n"
        "                  'version': [__version__, version('expertd')],\n"
        "                  'all': expertd.__all__, 'dir': dir(expertd)}))\n"))
    assert all(out["same"]), out["same"]
    assert out["version"][0] == out["version"][1]
    assert {"Expert", "ExpertsClient", "__version__"} <= set(out["all"])
    assert set(out["all"]) <= set(out["dir"])


def test_unknown_names_and_submodules():
    out = run("import expertd\n"
              "try:\n    expertd.NoSuchThing\nexcept AttributeError as e:\n    print('AttributeError', e)\n"
              "from expertd import control, spec\n"
              "print(control.__name__, spec.__name__)\n")
    assert "AttributeError" in out and "NoSuchThing" in out
    assert "expertd.control expertd.spec" in out
