"""Running chains: experts that build on other experts' opinions (``needs:``).

A request names the experts it wants; ``ChainPlan.order`` adds what they need
(transitively) and puts every expert after the ones it needs. ``run`` then
asks each expert once for all the documents of the request, each in its own
greenlet as soon as the experts it needs have answered, so independent experts
run concurrently. What an expert is asked is the service's ``ask`` callback
(it reuses opinions a document already carries, and turns a dependency's
failure into ``DependencyFailed``). Caller options (``fresh``,
``include_needs``, ``only_opinions``, ``as_json``) are parsed by ``chain_options``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import gevent
from gevent.event import Event

from expertd import jsonc, spec
from expertd.names import base_name
from expertd.rpc_server.errors import BadArguments, DependencyFailed, ShuttingDown
from expertd.rpc_server.validation import json_type


class Answer(NamedTuple):
    """One expert's answer for one document: an opinion, or the exception that stopped it."""

    ok: bool
    value: Any
    #: The opinion was already in the document (an earlier stage's), not computed now.
    reused: bool = False
    #: Why the opinion the document carried was not reused (it failed its expert's check),
    #: when this answer was computed instead; ``None`` otherwise.
    recomputed: str | None = None
    #: The version of the expert that made the opinion (``None``: the expert has no versions).
    version: str | None = None


#: Per expert, its answers for the documents of a request, in order.
Answers = dict[str, list[Answer]]


class ChainPlan:
    """The experts' dependency graph (already checked for unknown names and cycles)."""

    def __init__(self, needs: Mapping[str, Mapping[str, str]]) -> None:
        """``needs``: for every expert, ``{expert it needs: key in its input}``."""
        self.needs = {name: dict(deps) for name, deps in needs.items()}

    def order(self, names: list[str]) -> list[str]:
        """``names`` and everything they need, each after the experts it needs."""
        ordered: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dependency in self.needs.get(base_name(name), {}):
                visit(dependency)
            ordered.append(name)

        for name in names:
            visit(name)
        return ordered



def run(plan: ChainPlan, names: list[str],
        ask: Callable[[str, Answers], list[Answer]]) -> Answers:
    """Ask every expert of ``plan.order(names)`` once: ``ask(name, answers of what it needs)``.

    The answers come back in that order (each expert after the ones it needs).

    Experts whose needs have answered run concurrently (a greenlet each). A
    bug in ``ask`` (an exception) is raised here once everything has stopped;
    experts that needed the one that raised are not asked.
    """
    order = plan.order(names)
    if len(order) == 1:
        return {order[0]: ask(order[0], {})}
    results: Answers = {}
    finished = {name: Event() for name in order}
    crashed: list[BaseException] = []

    def one(name: str) -> None:
        try:
            needs = plan.needs.get(base_name(name), {})
            for dependency in needs:
                finished[dependency].wait()
            if all(dependency in results for dependency in needs):
                results[name] = ask(name, {dependency: results[dependency] for dependency in needs})
        except Exception as exc:  # reported to the caller below
            crashed.append(exc)
        finally:
            finished[name].set()

    gevent.joinall([gevent.spawn(one, name) for name in order])
    if crashed:
        raise crashed[0]
    missing = [name for name in order if name not in results]
    if missing:  # a greenlet was killed (the server is stopping)
        raise ShuttingDown(f"expert {missing[0]!r} was stopped before it answered")
    return {name: results[name] for name in order}


def dependency_failure(name: str, failed: list[tuple[str, BaseException]]) -> DependencyFailed:
    """``DependencyFailed`` for expert ``name``, naming each failed dependency and its error."""
    causes = "; ".join(f"{dependency!r}, which failed: {type(exc).__name__}: {exc}"
                       for dependency, exc in failed)
    return DependencyFailed(f"expert {name!r} was not asked: it needs {causes}")


def chain_input(field: str, value: Any, needs: Mapping[str, str], answers: Answers,
                index: int) -> dict:
    """The input of a chained expert for document ``index``: its field and the opinions it needs."""
    item = dict(value) if field is None else {field: value}  # None: the whole document
    for dependency, key in needs.items():
        item[key] = answers[dependency][index].value
    return item


def present_opinion(doc: Any, name: str) -> Any:
    """What ``doc`` already carries under ``opinions.<name>`` (an earlier stage's), or ``None``.

    It may be anything the caller sent: check it before reusing it.
    """
    if not isinstance(doc, dict):
        return None
    opinions = doc.get("opinions")
    if not isinstance(opinions, dict):
        return None
    return opinions.get(name)


@dataclass(frozen=True)
class ChainOptions:
    """What a caller may choose about chains (the optional last argument of the RPC methods)."""

    #: Recompute the opinions an expert needs even when the document carries them:
    #: ``True`` for all, or the names of the ones to recompute.
    fresh: bool | frozenset = False
    #: Put the opinions of the experts that were only needed into the answer too.
    include_needs: bool = True
    #: Answer each document with only its ``opinions`` (and ``errors``), not the whole
    #: document: for a caller that keeps the document (the pipe stage), half the bytes back.
    only_opinions: bool = False
    #: Answer each document (``opinions``, ``opinions_batch``) with the UTF-8 bytes of its
    #: answer's JSON text (``json_answer``): what the pipe stage splices into a line.
    as_json: bool = False

    def reuses(self, name: str) -> bool:
        """Whether an opinion of ``name`` already in a document may stand in for asking it."""
        if self.fresh is True:
            return False
        return not (self.fresh and name in self.fresh)


DEFAULT_OPTIONS = ChainOptions()
#: The keys ``options`` may hold, as the spec declares them (``options`` in protocol.json).
OPTION_KEYS = tuple(key for key in spec.RAW["options"] if not key.startswith("_"))
#: ``json.dumps(value, ensure_ascii=False, allow_nan=False)``, as the pipe stage writes a line.
_encode_json = jsonc.encoder()


def json_answer(answer: dict):
    """``answer`` as the UTF-8 bytes of its JSON text (the ``as_json`` option), written as the
    pipe stage writes it; ``answer`` itself if JSON cannot hold it (a NaN, a lone surrogate,
    bytes): the caller then finds out what is wrong with it as without the option."""
    try:
        return _encode_json(answer).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        return answer


def chain_options(options: Any) -> ChainOptions:
    """Check the ``options`` argument: ``null`` or
    ``{"fresh": bool|[names], "include_needs": bool, "only_opinions": bool}``."""
    if options is None or options == {}:
        return DEFAULT_OPTIONS
    if not isinstance(options, dict):
        raise BadArguments(f"options must be an object like {{\"fresh\": true, "
                           f"\"include_needs\": false}}, got {json_type(options)}")
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise BadArguments(f"unknown option(s) {', '.join(map(repr, unknown))}; "
                           f"options are: {', '.join(OPTION_KEYS)}")
    fresh = options.get("fresh", False)
    if isinstance(fresh, (list, tuple)) and all(isinstance(n, str) for n in fresh):
        fresh = frozenset(fresh)
    elif not isinstance(fresh, bool):
        raise BadArguments(f"option fresh must be true, false or a list of expert names, "
                           f"got {json_type(fresh)}")
    flags = {}
    for key, default in (("include_needs", True), ("only_opinions", False), ("as_json", False)):
        flags[key] = options.get(key, default)
        if not isinstance(flags[key], bool):
            raise BadArguments(f"option {key} must be true or false, got {json_type(flags[key])}")
    return ChainOptions(fresh=fresh, **flags)
