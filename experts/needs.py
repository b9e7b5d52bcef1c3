"""Chains in the experts file: which experts an expert ``needs``, and checks on that graph.

An entry may name the experts whose opinions it builds on, FireX style, with
how each maps onto its input::

    consensus:
      expert: expertd.experts.consensus:ConsensusExpert
      needs: {sentiment: sentiment, vader: rules}   # expert -> key in the input
    moderation:
      expert: my_experts:moderate
      needs: [genre]                                 # a list: the key is the name

Such an expert receives, per document, a dict of its field and the opinions
it asked for, e.g. ``{"text": ..., "sentiment": {...}, "rules": {...}}``.
Names that the file does not define, and cycles (``a -> b -> a``), are refused
when the file is loaded. The server plans and runs chains in
``rpc_server/chain_runner.py``.
"""

from __future__ import annotations

import re
from typing import Any

from expertd.experts.base import Expert, FunctionExpert

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_needs(name: str, raw: Any) -> tuple[dict[str, str], list[str]]:
    """Normalise one entry's ``needs:`` into ``{dependency: input key}``; also return problems."""
    if raw is None:
        return {}, []
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        pairs = [(item, item) for item in raw]
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        return {}, [f"expert {name!r}: 'needs' must be a list of expert names or a mapping "
                    f"expert: input key, got {type(raw).__name__}"]
    needs: dict[str, str] = {}
    problems = []
    for dependency, key in pairs:
        if not isinstance(dependency, str) or not isinstance(key, str) or not KEY_RE.match(key):
            problems.append(f"expert {name!r}: 'needs' entries must be expert names mapped to "
                            f"input keys (identifiers), got {dependency!r}: {key!r}")
        elif dependency in needs:
            problems.append(f"expert {name!r} needs {dependency!r} twice")
        elif key in needs.values():
            problems.append(f"expert {name!r}: two of its needs map to the same input key {key!r}")
        else:
            needs[dependency] = key
    return needs, problems


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (``[a, b, a]``), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dependency in graph.get(node, {}):
            if state.get(dependency) == 1:
                return path[path.index(dependency):] + [dependency]
            if dependency in graph and dependency not in state:
                found = visit(dependency)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def graph_problems(graph: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """What is wrong with a whole file's needs, as ``(expert, message)``: unknown experts, a cycle."""
    problems = []
    for name, needs in graph.items():
        for dependency in needs:
            if dependency not in graph:
                problems.append((name, f"expert {name!r} needs {dependency!r}, which the experts "
                                       f"file does not define (it defines: {', '.join(graph)})"))
    cycle = find_cycle(graph)
    if cycle:
        problems.append((cycle[0], f"experts may not need themselves, even through others: "
                                   f"cycle {' -> '.join(cycle)}"))
    return problems


def resolve_needs(raw: dict[str, Any]) -> tuple[dict[str, dict[str, str]], list[tuple[str, str]]]:
    """Parse every entry's raw ``needs:`` and check the graph.

    Returns the graph (``{expert: {dependency: input key}}``) and every problem
    as ``(expert it belongs to, message)``.
    """
    graph: dict[str, dict[str, str]] = {}
    problems: list[tuple[str, str]] = []
    for name, value in raw.items():
        graph[name], found = parse_needs(name, value)
        problems.extend((name, message) for message in found)
    problems.extend(graph_problems(graph))
    return graph, problems


def input_problems(expert: Expert, needs: dict[str, str]) -> list[str]:
    """Whether a built expert can take the input its ``needs:`` gives it (problems, or ``[]``)."""
    name = expert.name
    takes = getattr(expert, "takes_opinions", False) or isinstance(expert, FunctionExpert)
    if needs and not takes:
        return [f"expert {name!r} has 'needs' but reads only its {expert.field!r} field "
                f"({type(expert).__name__} does not set takes_opinions = True); remove 'needs' "
                f"or use an expert that builds on other experts' opinions"]
    if not needs and getattr(expert, "takes_opinions", False):
        wanted = ", ".join(getattr(expert, "opinion_inputs", ())) or "the experts it builds on"
        return [f"expert {name!r} builds on other experts' opinions; name them with 'needs' "
                f"in the experts file (it reads: {wanted})"]
    problems = []
    keys = set(needs.values())
    if expert.field in keys:
        problems.append(f"expert {name!r}: an input key of 'needs' is {expert.field!r}, "
                        f"the field it reads; map that expert to another key")
    missing = [key for key in getattr(expert, "opinion_inputs", ()) if key not in keys]
    if missing:
        problems.append(f"expert {name!r} reads the opinions {', '.join(missing)!s} but its "
                        f"'needs' gives it {', '.join(sorted(keys)) or 'none'}; map experts onto "
                        f"them, e.g. needs: {{sentiment: {missing[0]}}}")
    return problems
