"""The product's import graph: no cycles, dependencies one way, a light pipe stage.

Every ``.py`` file of the product is parsed (never imported): ``expertd/``,
``rpc_server/``, ``experts/`` and ``clients/`` under their ``expertd.*`` import
names (pyproject's package-dir). An edge is any import, at module level or
inside a function (``from . import`` forms resolved), a literal
``importlib.import_module("...")`` and each ``"module:attr"`` string of
``expertd.group.SUBCOMMANDS``. ``import a.b.c`` is an edge to ``a.b.c`` only,
not to its parent packages.

Two kinds of edges are facades, not dependencies, and are left out: what a
package's ``__init__`` imports inside its module-level ``__getattr__`` (a lazy
re-export, PEP 562), and everything ``expertd/__init__.py`` imports lazily.

The parts, and what each may import besides itself: ``expertd.experts`` the
core; ``expertd.rpc_server`` the experts and the core; ``expertd.clients`` the
core; the core (``expertd/*.py``) nothing of the three. The entry points
``expertd.cli`` and ``expertd.group`` may import any part inside functions, and
the commands (``expertd/commands/``, imported only when one runs) anything.

``/work/shared/tools/import_cycles.py`` finds the same cycles on a tree laid out
as installed (it does not know the package-dir mapping).
"""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Folder of the repository -> its import package (pyproject's [tool.setuptools.package-dir]).
FOLDERS = {"expertd": "expertd", "rpc_server": "expertd.rpc_server",
           "experts": "expertd.experts", "clients": "expertd.clients"}
PARTS = ("expertd.rpc_server", "expertd.experts", "expertd.clients")
#: The command-line entry points: they may import any part, inside functions (``expertd
#: --help`` stays light); the facade ``expertd`` re-exports the same way.
ENTRY_POINTS = ("expertd", "expertd.cli", "expertd.group")
#: The commands, imported only when one runs (through SUBCOMMANDS): they may import anything.
COMMANDS = "expertd.commands"
#: What the pipe stage must not load at start.
HEAVY = ("zerorpc", "gevent", "tensorflow", "yaml", "click")


@dataclass
class Module:
    """One product module and what it imports."""

    name: str
    path: Path
    #: (target, lazy) for imports of product modules; lazy = inside a function.
    edges: set[tuple[str, bool]] = field(default_factory=set)
    #: top-level names of third-party modules imported at module level.
    external: set[str] = field(default_factory=set)


def product_modules() -> dict[str, Module]:
    """Every module of the product by its import name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.parent == ROOT / "expertd" / "scaffold":
                continue  # a user's project that `expertd init` writes, not a module of the product
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            found[name] = Module(name, path)
    return found


def _resolve(name: str, modules: dict) -> str | None:
    """``name`` if it is a product module, else its longest prefix that is (None outside)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


class _Collector(ast.NodeVisitor):
    """Walks one module and records its imports, noting those inside functions."""

    def __init__(self, module: Module, modules: dict) -> None:
        self.module = module
        self.modules = modules
        self.depth = 0  # functions we are inside
        self.in_facade_getattr = False
        is_init = module.path.name == "__init__.py"
        self.package = module.name if is_init else module.name.rpartition(".")[0]
        self.is_init = is_init

    def add(self, target: str) -> None:
        lazy = self.depth > 0
        if self.in_facade_getattr:
            return  # a lazy re-export of a package, not a dependency
        resolved = _resolve(target, self.modules)
        if resolved is None:
            if not lazy and not target.startswith("expertd"):
                self.module.external.add(target.partition(".")[0])
            return
        if resolved != self.module.name:
            self.module.edges.add((resolved, lazy))

    def visit_FunctionDef(self, node) -> None:
        facade = self.is_init and self.depth == 0 and node.name == "__getattr__"
        self.depth += 1
        self.in_facade_getattr = self.in_facade_getattr or facade
        self.generic_visit(node)
        self.depth -= 1
        if facade:
            self.in_facade_getattr = False

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            parts = parts[:len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self.add(full if full in self.modules else base)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self.depth += 1  # what import_module loads is loaded when it runs
            self.add(node.args[0].value)
            self.depth -= 1
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if self.module.name == "expertd.group" and "SUBCOMMANDS" in targets \
                and isinstance(node.value, ast.Dict):
            for value in node.value.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    self.depth += 1  # imported when the subcommand runs
                    self.add(value.value.partition(":")[0])
                    self.depth -= 1
        self.generic_visit(node)


def import_graph() -> dict[str, Module]:
    """The product's modules with their imports."""
    modules = product_modules()
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        _Collector(module, modules).visit(tree)
    return modules


def _edges(module: Module) -> list[tuple[str, bool]]:
    if module.name == "expertd":  # the facade re-exports lazily
        return [(t, lazy) for t, lazy in module.edges if not lazy]
    return sorted(module.edges)


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph = {name: sorted({t for t, _ in _edges(m)}) for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def part_of(name: str) -> str:
    """The part a module belongs to: one of PARTS, ``entry``, ``commands`` or ``core``."""
    for part in PARTS:
        if name == part or name.startswith(part + "."):
            return part
    if name == COMMANDS or name.startswith(COMMANDS + "."):
        return "commands"
    return "entry" if name in ENTRY_POINTS else "core"


#: What each part may import (besides itself).
ALLOWED = {
    "core": {"core"},
    "expertd.experts": {"expertd.experts", "core"},
    "expertd.rpc_server": {"expertd.rpc_server", "expertd.experts", "core"},
    "expertd.clients": {"expertd.clients", "core"},
}


def wrong_way(modules: dict[str, Module]) -> list[str]:
    """Imports against the direction the parts may depend on each other."""
    bad = []
    for name, module in sorted(modules.items()):
        source = part_of(name)
        if source == "commands":
            continue
        for target, lazy in sorted(module.edges):
            allowed = ALLOWED.get(source, ALLOWED["core"])
            if source == "entry" and lazy:
                continue  # entry points import their commands when they run
            if part_of(target) not in allowed:
                bad.append(f"{name} -> {target}{' (inside a function)' if lazy else ''}")
    return bad


def module_level_closure(modules: dict[str, Module], start: str) -> set[str]:
    """The product modules importing ``start`` loads: module-level edges and parent packages."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
        todo.extend(t for t, lazy in modules[name].edges if not lazy)
    return seen


def test_every_product_folder_is_parsed():
    modules = import_graph()
    for module in ("expertd.clients.pipe.stage", "expertd.rpc_server.supervisor",
                   "expertd.experts.base", "expertd.group"):
        assert module in modules
    # the walker sees lazy imports, import_module strings and SUBCOMMANDS
    group = modules["expertd.group"]
    assert ("expertd.rpc_server.commands", True) in group.edges


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_dependencies_point_one_way():
    bad = wrong_way(import_graph())
    assert not bad, ("experts import only experts and the core; rpc_server imports "
                     "rpc_server, experts and the core; clients import clients and the core; "
                     "the core none of them:\n" + "\n".join(bad))


def test_pipe_stage_imports_nothing_heavy_at_module_level():
    modules = import_graph()
    closure = module_level_closure(modules, "expertd.clients.pipe")
    heavy = {f"{name} imports {ext}" for name in closure for ext in modules[name].external
             if ext in HEAVY}
    assert not heavy, sorted(heavy)
    assert not any(part_of(n) in ("expertd.rpc_server", "expertd.experts") for n in closure)


def modules_the_stage_loads() -> set[str]:
    """Every module a fresh interpreter holds once it imported the stage and ran its parser."""
    code = ("import sys, expertd.clients.pipe as p; p.parse_fast(['sentiment']); "
            "print(' '.join(sorted(sys.modules)))")
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.split())


def test_pipe_stage_really_loads_nothing_heavy():
    """The same, measured: a fresh interpreter that imports the stage (and runs its parser)."""
    loaded = {name.partition(".")[0] for name in modules_the_stage_loads()}
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


#: Standard modules the one-document stage does without (bench/RESULTS-startup.md): each costs
#: it milliseconds at every start; annotations use ``TYPE_CHECKING = False`` guards instead,
#: JSON goes through ``expertd.jsonc`` (json's C scanner and encoder, without ``json``), names
#: are checked without ``re`` (expertd/names.py), signals through ``_signal`` (no enums),
#: msgpack through ``clients.lean_msgpack`` (msgpack's bytes in plain Python: no ``msgpack``,
#: whose ``msgpack.ext`` imports ``datetime``; frames without ``struct``), named tuples
#: through ``expertd.records`` and deques from ``_collections`` (no ``collections``), and the
#: ``expertd`` command is a plain script (expertd/scripts/), not pip's, which imports re.
#: Nor does it import expertd's tracing without a variable that turns it on
#: (``clients.calls.TRACE_VARIABLES``), nor ``spread`` before it opens a spare connection.
STARTUP_AVOIDS = ("typing", "contextlib", "atexit", "warnings", "json", "re", "enum",
                  "functools", "signal", "msgpack", "datetime", "struct", "collections",
                  "expertd.tracing", "expertd.tracecontext", "expertd.clients.spread")


def test_pipe_stage_start_up_loads_no_typing_nor_contextlib():
    """A fresh interpreter that imports the stage and parses its arguments loads none of them."""
    loaded = modules_the_stage_loads()
    assert not loaded & set(STARTUP_AVOIDS), loaded & set(STARTUP_AVOIDS)


def test_the_expertd_script_running_a_stage_loads_none_of_them():
    """``expertd pipe NAME`` through the script pip installs (expertd/scripts/expertd), with
    one document and no server (the document is read, parsed and written through)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "expertd" / "scripts" / "expertd"), "pipe",
         "sentiment", "--endpoint", f"tcp://127.0.0.1:{port}", "--timeout", "0.2"],
        input=b'{"id": 1, "text": "I love it"}\n', capture_output=True, timeout=60)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout == b'{"id": 1, "text": "I love it"}\n'
    loaded = {line.rpartition("|")[2].strip() for line in done.stderr.decode().splitlines()
              if line.startswith("import time:")}
    assert "expertd.clients.pipe.stage" in loaded
    assert not loaded & set(STARTUP_AVOIDS), loaded & set(STARTUP_AVOIDS)
