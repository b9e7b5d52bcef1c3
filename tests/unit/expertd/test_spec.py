"""The protocol is written once: expertd/protocol.json. The code, the file and docs/protocol.md agree.

Checked here: the server exposes exactly the spec's methods with its arguments,
returns exactly its health() fields and raises exactly its server-side errors;
the Node loader sees the same values as Python; the document's tables are the
ones the spec makes; the default endpoint and the header key are spelled
nowhere else in product code.
"""

import ast
import inspect
import json
import re
import subprocess

import pytest

from expertd import spec
from expertd.rpc_server import errors
from tests.conftest import ROOT

PRODUCT_DIRS = ["rpc_server", "experts", "clients", "expertd", "express_bridge/src"]


def _node(script: str):
    out = subprocess.run(["node", "-e", script], cwd=ROOT / "express_bridge", check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def _product_files():
    for folder in PRODUCT_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".js") and "node_modules" not in path.parts:
                yield path


# -- the error catalogue ------------------------------------------------------------------

def test_server_classes_are_the_catalogue_server_names():
    classes = {name for name, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, errors.ExpertdError) and obj is not errors.ExpertdError}
    server_side = {name for name, k in spec.ERRORS.items() if k.side == "server"}
    assert classes == server_side
    for name in server_side:
        cls = getattr(errors, name)
        assert cls.__name__ == name and cls.__doc__ == spec.ERRORS[name].summary


def test_every_entry_is_complete():
    for name, entry in spec.ERRORS.items():
        assert 400 <= entry.status < 600, name
        assert entry.exit in (1, 2, 3), name
        assert entry.hint and entry.summary, name
        assert entry.side in ("server", "client"), name
    assert spec.is_retryable("Overloaded") and not spec.is_retryable("InvalidDocument")
    assert spec.kind("NoSuchName").name == "InternalError"


# -- methods and health() -------------------------------------------------------------------

def test_the_server_exposes_exactly_the_spec_methods_with_their_arguments():
    from expertd.rpc_server.service import RESERVED, Experts

    exposed = {name: member for name, member in inspect.getmembers(Experts) if getattr(member, "rpc", False)}
    assert set(exposed) == set(spec.METHODS) == set(RESERVED)
    for name, method in spec.METHODS.items():
        params = list(inspect.signature(exposed[name]).parameters.values())[1:]  # without self
        described = tuple(p.name + ("?" if p.default is not inspect.Parameter.empty else "") for p in params)
        assert described == method.args, name


def test_names_an_expert_may_not_take_are_the_spec_methods():
    from expertd.rpc_server.server import reserved_names

    assert reserved_names() == set(spec.METHODS)


def _dict_keys(source: str, function: str) -> set[str]:
    """The string keys of the dict literals returned by ``function`` in ``source``."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Dict):
                    keys |= {k.value for k in ret.value.keys if isinstance(k, ast.Constant)}
    return keys


def test_health_answers_exactly_the_spec_fields():
    service = (ROOT / "rpc_server" / "service.py").read_text()
    server = (ROOT / "rpc_server" / "server.py").read_text()
    fields = _dict_keys(service, "health") | _dict_keys(server, "identity")
    assert fields == set(spec.HEALTH_FIELDS)


def test_readers_of_health_name_only_spec_fields():
    from expertd.clients import spread

    assert set(spread.HEALTH_READ) <= set(spec.HEALTH_FIELDS)
    with pytest.raises(KeyError):
        spec.health_fields("pid", "no_such_field")
    node = _node("console.log(JSON.stringify(require('./src/pool').HEALTH_READ))")
    assert set(node) <= set(spec.HEALTH_FIELDS)


# -- Node reads the same file ---------------------------------------------------------------

def test_the_bridge_reads_the_same_spec():
    if not (ROOT / "express_bridge" / "node_modules").is_dir():
        pytest.skip("the bridge's packages are not installed (make installs them: npm ci)")
    node = _node(
        "const s = require('./src/spec'); const e = require('./src/errors');"
        "const c = require('./src/config');"
        "console.log(JSON.stringify({endpoint: s.DEFAULT_ENDPOINT, header: s.TIMEOUT_HEADER,"
        " methods: Object.fromEntries(Object.entries(s.METHODS).map(([n, m]) => [n, m.args])),"
        " stateful: [...s.STATEFUL_METHODS], refused: [...s.REFUSED_BEFORE_RUNNING],"
        " health: Object.keys(s.HEALTH_FIELDS), profiles: s.RETRY_PROFILES,"
        " status: e.REMOTE_STATUS, retryable: [...e.RETRYABLE],"
        " defaults: {host: c.DEFAULTS.HOST, port: c.DEFAULTS.PORT, endpoint: c.DEFAULTS.EXPERTD_ENDPOINT,"
        " heartbeat: c.DEFAULTS.RPC_HEARTBEAT}}))")
    assert node["endpoint"] == spec.DEFAULT_ENDPOINT
    assert node["header"] == spec.TIMEOUT_HEADER
    assert node["methods"] == {name: list(m.args) for name, m in spec.METHODS.items()}
    assert set(node["stateful"]) == spec.STATEFUL_METHODS
    assert set(node["refused"]) == spec.REFUSED_BEFORE_RUNNING
    assert node["health"] == list(spec.HEALTH_FIELDS)
    assert node["profiles"] == spec.RETRY_PROFILES
    for name, entry in spec.ERRORS.items():
        if entry.side == "server":
            assert node["status"][name] == entry.status, name
    assert set(node["retryable"]) == {n for n, k in spec.ERRORS.items() if k.retryable}
    assert node["defaults"] == {"host": spec.BRIDGE_HOST, "port": str(spec.BRIDGE_PORT),
                                "endpoint": spec.DEFAULT_ENDPOINT, "heartbeat": str(spec.HEARTBEAT_S)}


def test_the_bridge_applies_the_same_ask_again_rule():
    from tests.unit.expertd.test_retry import ASK_AGAIN_CASES

    script = ("const {mayAskAgain} = require('./src/retry');"
              f"const cases = {json.dumps(ASK_AGAIN_CASES)};"
              "console.log(JSON.stringify(cases.map(([m, n]) => mayAskAgain(m, n, true))))")
    assert _node(script) == [expected for _, _, expected in ASK_AGAIN_CASES]


def test_the_defaults_agree_with_each_other():
    assert spec.DEFAULT_ENDPOINT == f"tcp://{spec.DEFAULT_HOST}:{spec.DEFAULT_PORT}"


# -- the document ---------------------------------------------------------------------------

def test_the_document_tables_are_the_spec():
    from docs import protocol_tables

    for page, names in protocol_tables.PAGES.items():
        text = page.read_text(encoding="utf-8")
        assert protocol_tables.render(text, names, page) == text, "run: python docs/protocol_tables.py"


def test_the_document_names_every_method_error_field_and_header():
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    headers = [h["key"] for h in spec.HEADERS.values()]
    for name in [*spec.METHODS, *spec.ERRORS, *spec.HEALTH_FIELDS, *headers]:
        assert f"`{name}`" in text, name
    for word in ("[header, name, args]", "msgpack", "_zpc_hb", "OK", "ERR", "STREAM"):
        assert word in text, word


# -- written once ---------------------------------------------------------------------------

def _code_strings(path):
    """String literals of a Python file, without docstrings and ``__all__`` (names of Python objects)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    exports = {id(element) for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
               for element in ast.walk(node.value)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and id(node) not in exports]


def test_the_default_endpoint_is_spelled_only_in_the_spec():
    found = [str(p.relative_to(ROOT)) for p in _product_files() if spec.DEFAULT_ENDPOINT in p.read_text()]
    assert found == []


def _without_comments(js: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", js, flags=re.S)


def test_the_header_key_is_spelled_only_in_the_spec():
    key = spec.TIMEOUT_HEADER
    found = []
    for path in _product_files():
        if path.suffix == ".py":
            if any(key in s for s in _code_strings(path)):
                found.append(str(path.relative_to(ROOT)))
        elif re.search(rf"[\"'`]{key}[\"'`]", _without_comments(path.read_text())):
            found.append(str(path.relative_to(ROOT)))
    assert found == []


def test_no_product_code_reads_another_error_file():
    for path in _product_files():
        assert "errors.json" not in path.read_text(), path


def test_error_names_are_spelled_only_in_the_spec():
    quoted = re.compile(r"[\"'`](%s)[\"'`]" % "|".join(spec.ERRORS))
    found = []
    for path in _product_files():
        where = str(path.relative_to(ROOT))
        if path.suffix == ".py":
            if any(s in spec.ERRORS for s in _code_strings(path)):
                found.append(where)
        elif quoted.search(_without_comments(path.read_text())):
            found.append(where)
    assert found == []


def test_every_error_name_the_code_uses_is_in_the_spec():
    used = set()
    for path in _product_files():
        used |= set(re.findall(r"\bERROR\.([A-Za-z_]\w*)", _without_comments(path.read_text())))
    assert used and used <= set(spec.ERRORS), used - set(spec.ERRORS)
    assert spec.ERROR.Overloaded == "Overloaded"
    with pytest.raises(AttributeError):
        spec.ERROR.Overloadd  # noqa: B018 - a misspelt name fails loudly


def test_the_errors_page_table_agrees_with_the_spec():
    """docs/errors.md's table (with its longer "when") states statuses and rules: they must be the spec's."""
    readme = (ROOT / "docs" / "errors.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (yes|no) \| (yes|no) \|", readme, re.M)
    assert len(rows) >= 10
    for name, status, retryable, per_document in rows:
        entry = spec.ERRORS[name]
        assert (int(status), retryable == "yes", per_document == "yes") == \
            (entry.status, entry.retryable, entry.per_document), name


def test_every_method_name_the_code_uses_is_in_the_spec():
    used = set()
    for path in _product_files():
        used |= set(re.findall(r"\bMETHOD\.([A-Za-z_]\w*)", _without_comments(path.read_text())))
    assert used and used <= set(spec.METHODS), used - set(spec.METHODS)
    with pytest.raises(AttributeError):
        spec.METHOD.opinon  # noqa: B018 - a misspelt name fails loudly
