"""Only the transport touches zerorpc's internals (issue #21, item 4).

The check, precisely. ``PRIVATE`` is every underscore name (not a dunder)
that the installed zerorpc's own source defines as an attribute or method
(``self._x = ...``, ``def _x``, ``_x = ...`` in a class). In every ``.py`` file
under ``rpc_server/``, ``clients/``, ``experts/`` and ``expertd/``, except the
files listed in ``ALLOWED``, it is a violation to:

1. import a zerorpc submodule (``import zerorpc.channel``,
   ``from zerorpc.events import Event``) or a private name from the public
   namespace (``from zerorpc import _x``): only ``import zerorpc`` and
   ``from zerorpc import PublicName`` are allowed;
2. read or write ``EXPR._x`` with ``_x`` in ``PRIVATE`` where ``EXPR`` is not
   ``self``/``cls`` (e.g. ``server._events``, ``self.zerorpc._task_pool``);
3. inside a class that derives from a zerorpc class (a base written
   ``zerorpc.X`` or a name imported from zerorpc), read or write
   ``self._x`` with ``_x`` in ``PRIVATE``, or define a method ``_x`` in
   ``PRIVATE`` (overriding a private hook such as ``_print_traceback``);
4. name such an attribute through ``getattr``/``setattr``/``hasattr`` with a
   string literal (``getattr(server, "_events")``).

An object of our own that happens to use one of those names on ``self``
(``self._socket`` in ``clients/wire.py``) is not zerorpc's, and rule 2 does
not look at ``self``. Rule 2 can still flag ``other._name`` on an object of
ours; rename it rather than widening ``ALLOWED``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zerorpc

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("rpc_server", "clients", "experts", "expertd")
#: The server-side transport package and the one client-side hook module.
ALLOWED_DIRS = ("rpc_server/transport/",)
ALLOWED_FILES = ("clients/zerorpc_hooks.py",)
ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


def zerorpc_private_names() -> set[str]:
    """Underscore names that the installed zerorpc defines on its objects."""
    names: set[str] = set()
    for path in Path(zerorpc.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.Assign):
                        names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


PRIVATE = zerorpc_private_names()


def _zerorpc_names(tree: ast.AST) -> set[str]:
    """Local names bound to zerorpc or to something imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "zerorpc" or alias.name.startswith("zerorpc."):
                    names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and \
                (node.module == "zerorpc" or node.module.startswith("zerorpc.")):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root_name(expr: ast.AST) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every way ``source`` touches zerorpc's internals (see the module docstring)."""
    tree = ast.parse(source, filename)
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zerorpc."):
                    report(node, f"imports zerorpc submodule {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("zerorpc."):
                report(node, f"imports from zerorpc submodule {node.module}")
            elif node.module == "zerorpc":
                for alias in node.names:
                    if alias.name.startswith("_"):
                        report(node, f"imports private zerorpc name {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                report(node, f"touches zerorpc's private .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ACCESSORS and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE:
            report(node, f"{node.func.id}() of zerorpc's private {node.args[1].value}")

    from_zerorpc = _zerorpc_names(tree)
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if not any(_root_name(base) in from_zerorpc for base in cls.bases):
            continue
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE and \
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                report(node, f"{cls.name} (a zerorpc subclass) touches self.{node.attr}")
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in PRIVATE:
                report(item, f"{cls.name} overrides zerorpc's private {item.name}()")
    return found


def product_files() -> list[Path]:
    """Every product ``.py`` file the rule applies to."""
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(ALLOWED_DIRS) or relative in ALLOWED_FILES:
                continue
            files.append(path)
    return files


def test_the_private_names_come_from_the_installed_zerorpc():
    # The names the transport relies on; if zerorpc renames them, this list shrinks.
    assert {"_events", "_multiplexer", "_methods", "_task_pool", "_channel_dispatcher",
            "_socket", "_context", "_active_channels", "_zmqid", "_queue",
            "_print_traceback", "_inject_builtins"} <= PRIVATE


def test_no_product_file_outside_the_transport_touches_zerorpc_internals():
    files = product_files()
    assert len(files) > 40, "the walk found too few files: wrong ROOT?"
    found = [v for path in files
             for v in violations(path.read_text(encoding="utf-8"),
                                 path.relative_to(ROOT).as_posix())]
    assert found == [], "zerorpc internals outside rpc_server/transport/:\n" + "\n".join(found)


def test_the_allowed_places_exist_and_do_touch_zerorpc_internals():
    # Otherwise ALLOWED is stale: it would excuse nothing, or excuse a file that moved.
    for allowed in (ROOT / ALLOWED_DIRS[0], ROOT / ALLOWED_FILES[0]):
        paths = sorted(allowed.rglob("*.py")) if allowed.is_dir() else [allowed]
        assert paths, f"{allowed} is missing"
        assert any(violations(p.read_text(encoding="utf-8"), p.name) for p in paths), allowed


def test_inside_the_transport_only_three_modules_touch_zerorpc_internals():
    # As rpc_server/transport/__init__.py says; the others use Server's public methods.
    transport = ROOT / ALLOWED_DIRS[0]
    touching = {p.name for p in transport.glob("*.py")
                if violations(p.read_text(encoding="utf-8"), p.name)}
    assert touching == {"server.py", "dispatch.py", "inspection.py"}


def test_the_check_catches_each_kind_of_access():
    cases = {
        "import zerorpc.channel": 1,
        "from zerorpc.events import Event": 1,
        "from zerorpc import _private_thing": 1,
        "server._events.setsockopt(1, 2)": 1,
        "len(self.zerorpc._task_pool)": 1,
        "getattr(server, '_multiplexer')": 1,
        "import zerorpc\nclass S(zerorpc.Server):\n    def f(self):\n        return self._methods\n": 1,
        "import zerorpc\nclass S(zerorpc.Server):\n    def _print_traceback(self, a, b):\n"
        "        pass\n": 1,
        "from zerorpc import Server\nclass S(Server):\n    def g(self):\n        self._name\n": 1,
    }
    for source, expected in cases.items():
        assert len(violations(source)) == expected, (source, violations(source))


def test_the_check_leaves_public_use_and_our_own_objects_alone():
    for source in (
        "import zerorpc\nc = zerorpc.Client(timeout=3)\nc.connect('tcp://x:1')\n",
        "from zerorpc import RemoteError, LostRemote\n",
        "class Mine:\n    def __init__(self):\n        self._socket = None\n        self._events = []\n",
        "import zerorpc\nzerorpc.Context.get_instance().register_middleware(object())\n",
    ):
        assert violations(source) == [], source
