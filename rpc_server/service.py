"""The ``Experts`` RPC surface: what a zerorpc client can call.

Every public method checks its arguments (wrong count or type is a
``BadArguments`` error, not a crash), logs one line (method, expert, latency,
outcome) and feeds the per-expert statistics. Each configured expert also gets
a method of its own name: ``sentiment(doc)``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from typing import Any, Callable

import gevent

from expertd import tracing
from expertd.experts.base import Expert
from expertd.names import base_name, parse_ref
from expertd.rpc_server import __version__
from expertd.spec import METHODS
from expertd.rpc_server import call_trace, chain_runner, recent_traces, runtime
from expertd.rpc_server.batching import MicroBatcher
from expertd.rpc_server.chain_runner import Answer, Answers, ChainOptions, chain_options, json_answer
from expertd.rpc_server.deadlines import current_deadline
from expertd.rpc_server.errors import (BadArguments, ExpertdError, InvalidDocument,
                               NotLearnable, UnknownExpert, VersionRefused, error_info)
from expertd.rpc_server.incremental import cooperatively
from expertd.rpc_server.learning import target_value
from expertd.rpc_server.logsafe import shown
from expertd.rpc_server.opinion_cache import OpinionCache
from expertd.rpc_server.stats import Stats
from expertd.rpc_server.validation import (document_list, expert_names, field_value, field_values,
                                           json_type)
from expertd.rpc_server.shadow import spawn_shadow
from expertd.rpc_server.versions import VersionSet, carried_version

log = logging.getLogger("expertd.calls")

#: ``_new_tuple(Answer, (fields...))`` builds an Answer in C (one per document and expert).
_new_tuple = tuple.__new__

#: Method names an expert may not take, because the service already uses them (the spec's methods).
RESERVED = frozenset(METHODS)


def _describe_target(method: str, args: tuple, expert: str | None) -> str:
    """The call's target for the log line; everything the caller sent goes through ``shown``."""
    if expert is not None:
        return f"expert={expert}"
    if method in ("opinion", "batch", "learn") and args:
        items = f" items={len(args[1])}" if method in ("batch", "learn") and len(args) > 1 and \
            isinstance(args[1], (list, tuple)) else ""
        return f"expert={shown(args[0])}{items}"
    parts = []
    if method in ("opinions", "opinions_batch"):
        names = args[1] if len(args) > 1 else None
        if isinstance(names, (list, tuple)) and names:
            parts.append(f"experts={shown(','.join(map(str, names)))}")
        else:
            parts.append("experts=all" if not names else f"experts={shown(names)}")
    if method == "opinions_batch" and args and isinstance(args[0], (list, tuple)):
        parts.append(f"items={len(args[0])}")
    return " ".join(parts)


def _document_errors(result: Any) -> str:
    """`` errors=Name:count,...`` for the documents of a result that carry errors (or "")."""
    docs = result if isinstance(result, list) else [result] if isinstance(result, dict) else []
    counts: dict[str, int] = {}
    for doc in docs:
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, dict):
            for error in errors.values():
                name = error.get("name") if isinstance(error, dict) else None
                if isinstance(name, str):
                    counts[name] = counts.get(name, 0) + 1
    return (" errors=" + ",".join(f"{n}:{c}" for n, c in sorted(counts.items()))) if counts else ""


def checked_call(fn: Callable, signature: inspect.Signature, name: str,
                 expert: str | None = None) -> Callable:
    """Wrap ``fn`` for RPC: check the argument count, log one line per call.

    Zerorpc passes positional arguments only; a call that does not fit
    ``signature`` raises ``BadArguments`` naming the expected arguments.
    """

    @functools.wraps(fn)
    def call(*args):
        began = time.perf_counter()
        outcome = "ok"
        trace = call_trace.current()
        parent = trace.parent if trace else None
        span = tracing.span(f"expertd {name}", parent, kind="server",
                            links=trace.links if trace else (),
                            attributes={"rpc.system": "zerorpc", "rpc.method": name,
                                        "expertd.expert": expert}) \
            if tracing.records(parent) else tracing.NO_SPAN
        if span.context is not None:  # recorded, or a root the sampler dropped: the call's work follows it
            call_trace.enter(span)
            trace = call_trace.current()
        try:
            try:
                signature.bind(*args[1:] if expert is None else args)
            except TypeError as exc:
                raise BadArguments(f"{name}{signature}: {exc}") from None
            result = fn(*args)
            if name in ("opinions", "opinions_batch"):
                outcome += _document_errors(result)
            return result
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {shown(str(exc), 200)}"
            span.fail(type(exc).__name__, shown(str(exc), 200))
            raise
        finally:
            span.end()
            target = _describe_target(name, args[1:] if expert is None else args, expert)
            log.info("call %s %s latency_ms=%.2f outcome=%s%s", name, target,
                     (time.perf_counter() - began) * 1000.0, outcome,
                     trace.log_field() if trace is not None else "")

    call.__signature__ = signature
    return call


def rpc_method(fn: Callable) -> Callable:
    """Mark a method of ``Experts`` as callable over RPC."""
    sig = inspect.signature(fn)
    public = sig.replace(parameters=list(sig.parameters.values())[1:])
    wrapped = checked_call(fn, public, fn.__name__)
    wrapped.__signature__ = sig
    wrapped.rpc = True
    return wrapped


class Experts:
    """The RPC service: opinions from every configured expert."""

    def __init__(self, experts: dict[str, Expert], batchers: dict[str, MicroBatcher],
                 stats: Stats, max_text_bytes: int, max_batch_docs: int = 100_000,
                 learning=None, caches: dict[str, OpinionCache] | None = None,
                 versions: dict[str, VersionSet] | None = None) -> None:
        """Serve ``experts`` through their ``batchers``; ``learning`` runs those that learn;
        ``caches`` hold the opinions of the experts that have one (``rpc_server.opinion_cache``).

        ``versions``: for each expert with ``versions:``, its loaded versions (``experts``
        and ``batchers`` then hold its default version).
        """
        self._experts = experts
        self._caches = caches or {}
        self._versions = dict(versions or {})
        self._learning = learning
        self._batchers = batchers
        self._stats = stats
        self._max_text_bytes = max_text_bytes
        self._max_batch_docs = max_batch_docs
        self._started = time.time()
        self._plan = chain_runner.ChainPlan({name: expert.needs for name, expert in experts.items()})
        #: Worker index and supervisor pid, set by the server (``None`` for a lone process).
        self.identity: dict = {}
        #: Load, unload, promote and roll back versions live (``rpc_server.live_versions``).
        self.live = None
        #: Per-version latency, errors and shadow agreement (``rpc_server.shadow``), if versioned.
        self.version_metrics = None

    # -- the RPC methods ------------------------------------------------------

    @rpc_method
    def opinion(self, name, doc, options=None):
        """Return the opinion of expert ``name`` on the JSON-object document ``doc``.

        An expert that builds on others (``needs``) has them asked first, reusing
        their opinions if ``doc`` carries them; ``options`` as for ``opinions``.
        """
        return self._opinion(name, doc, options)

    @rpc_method
    def opinions(self, doc, names=None, options=None):
        """Return ``doc`` with ``opinions.<name>`` added by each expert in ``names`` (all if empty).

        The experts run concurrently, each after the experts it needs (asked once,
        and not at all if ``doc`` already carries their opinions). One that fails
        leaves its error under ``errors.<name>`` (``{"name", "message"}``), its
        dependents get ``DependencyFailed``, and the others still answer.
        A needed opinion the document carries is reused only if it passes its
        expert's check (``opinion_schema``, ranges included, finite numbers);
        one that fails is recomputed and the reason left under ``recomputed.<name>``.
        ``options``: ``{"fresh": true | [names]}`` recomputes needed opinions the
        document carries; ``{"include_needs": false}`` leaves the needed experts'
        opinions out of the answer; ``{"only_opinions": true}`` answers only
        ``{"opinions", "errors"}``, without the rest of the document;
        ``{"as_json": true}`` answers the UTF-8 bytes of the answer's JSON text.
        """
        wanted = self._names(expert_names(names))
        settings = chain_options(options)
        if not isinstance(doc, dict):
            raise InvalidDocument(f"document must be a JSON object, got {json_type(doc)}")
        return self._merge_all([doc], wanted, settings)[0]

    @rpc_method
    def batch(self, name, docs, options=None):
        """Return the opinions of expert ``name`` on a list of documents, in order.

        A bad document fails the whole call with an error naming its index.
        """
        docs = document_list(docs, limit=self._max_batch_docs)
        with runtime.big_call_if(len(docs)):
            return self._batch(name, docs, options)

    def _batch(self, name, docs, options):
        expert = self._expert(name)
        settings = chain_options(options)
        field, input_type, max_bytes = expert.field, expert.input_type, self._max_text_bytes
        # Each document read once: the values go on to the model (``_ask_many``'s ``fields``).
        fields = field_values(docs, field, input_type, max_bytes)
        if not docs:
            return []
        answers = self._answers(docs, [name], settings, fields={name: fields})[name]
        opinions = []
        for i, answer in enumerate(cooperatively(answers)):
            if not answer.ok:
                if len(answers) > 1 and isinstance(answer.value, ExpertdError):
                    raise type(answer.value)(f"docs[{i}]: {answer.value}")
                raise answer.value
            opinions.append(answer.value)
        return opinions

    @rpc_method
    def opinions_batch(self, docs, names=None, options=None):
        """Return each document of ``docs`` with its ``opinions`` (and ``errors``) added, in order.

        Unlike ``batch``, a bad document does not fail the call: its problem is
        left under ``errors.<name>`` and every other document is answered. One
        that is not a JSON object (a string, number, null, array, boolean) is
        answered ``{"opinions": {}, "errors": {<name>: InvalidDocument, ...}}``.
        Chains and ``options`` as for ``opinions``.
        """
        docs = document_list(docs, limit=self._max_batch_docs)
        wanted = self._names(expert_names(names))
        with runtime.big_call_if(len(docs)):
            return self._merge_all(docs, wanted, chain_options(options))

    @rpc_method
    def experts(self):
        """List the experts: name, version, description, field, metrics, needs, batching."""
        out = []
        for name, expert in self._experts.items():
            entry = expert.describe()
            entry["needs"] = dict(self._plan.needs.get(name, {}))
            entry["batch"] = self._batchers[name].settings()
            if name in self._versions:
                entry["versions"] = self._versions[name].describe()
                entry.update(self._versions[name].policy())
                if self.version_metrics is not None:
                    entry["shadow_agreement"] = self.version_metrics.summary(name)
            if self._learning is not None and name in self._learning.learners:
                entry["learning"] = self._learning.learners[name].state()
            if name in self._caches:
                entry["cache"] = self._caches[name].describe()
            out.append(entry)
        return out

    @rpc_method
    def learn(self, name, docs):
        """Teach expert ``name`` from labelled documents (the target in its target field).

        Each bad document is refused on its own (``refused``: index, name,
        message); the others are stored durably in the feedback log and
        applied in order. A call beyond the learner's declared limits is
        refused whole before anything is stored: ``LearnLimit`` (more examples
        than ``max_examples_per_call``, or more labels than ``max_labels``),
        ``LearnBacklogFull`` (``max_backlog`` examples stored but not yet
        applied); so is a call whose deadline is too near to store
        (``Overloaded``). Returns ``{"accepted", "refused", "stored",
        "applied", "applied_at_version", "state"}`` once the examples are
        applied on this server or, before the caller's deadline, with
        ``applied`` false: the ``stored`` examples are then applied once the
        learner's ``model_version`` (``experts()``) reaches ``applied_at_version``.
        An expert that does not learn answers ``NotLearnable``.
        """
        docs = document_list(docs, limit=self._max_batch_docs)
        expert = self._expert(name)
        learners = self._learning.learners if self._learning is not None else {}
        if name not in learners:
            raise NotLearnable(f"expert {name!r} does not learn; experts that learn: "
                               f"{', '.join(learners) or 'none on this server'}")
        self._learning.check_call(name, len(docs))
        inputs, targets, refused = [], [], []
        for i, doc in enumerate(cooperatively(docs)):
            where = f"docs[{i}]"
            try:
                value = field_value(doc, expert.field, expert.input_type, self._max_text_bytes,
                                    where=where)
                target = target_value(doc, expert.target, expert.target_type, where=where)
            except ExpertdError as exc:
                refused.append({"index": i, **error_info(exc)})
                continue
            inputs.append(value)
            targets.append(target)
        return {"accepted": len(inputs), "refused": refused,
                **self._learning.teach(name, inputs, targets, current_deadline())}

    @rpc_method
    def expert_load(self, name, version):
        """Load ``version`` (a numbered folder) of expert ``name`` beside the served ones, on
        every worker. A version whose load raises is refused (``VersionRefused``, with why);
        the served ones keep serving. Admin: local or CURVE-authorised callers only."""
        return self._live().load(name, version)

    @rpc_method
    def expert_unload(self, name, version):
        """Stop serving ``version`` of expert ``name`` on every worker (not its default). Admin."""
        return self._live().unload(name, version)

    @rpc_method
    def expert_promote(self, name, version):
        """Make ``version`` (or a label) the default of expert ``name`` on every worker. Admin."""
        return self._live().promote(name, version)

    @rpc_method
    def expert_policy(self, name, policy):
        """Set how unnamed calls of expert ``name`` reach its versions, on every worker:
        ``{"shadow": VERSION or null, "canary": {"version", "share", "sticky"} or null}``. Admin."""
        return self._live().set_policy(name, policy)

    @rpc_method
    def expert_rollback(self, name):
        """Make the default of expert ``name`` the one before the last promote again. Admin."""
        return self._live().rollback(name)

    def _live(self):
        if self.live is None:
            raise VersionRefused("no expert of this server has versions (versions: in the "
                                 "experts file)")
        return self.live

    def switch_default(self, name: str) -> None:
        """After a promote or rollback: ``name`` answers with its versions' new default."""
        versions = self._versions[name]
        self._experts[name] = versions.experts[versions.default]
        self._batchers[name] = versions.batchers[versions.default]

    @rpc_method
    def health(self):
        """Say that the server is up: experts and their versions, pid, worker, uptime, learners' progress."""
        return {"status": "ok", "experts": list(self._experts), "version": __version__,
                "pid": os.getpid(), "uptime_s": round(time.time() - self._started, 3),
                "versions": {n: e.version for n, e in self._experts.items()},
                "served_versions": {n: {"versions": list(v.experts), "default": v.default,
                                        **v.policy()} for n, v in self._versions.items()},
                "learning": self._learning.progress() if self._learning is not None else {},
                **self.identity}

    @rpc_method
    def stats(self):
        """Calls, errors, items, batch sizes and latency (p50/p99, ms) per expert."""
        return self._stats.as_dict()

    @rpc_method
    def traces(self, trace_ids):
        """The spans this server holds for ``trace_ids`` in its ring of recent traces (tracing on)."""
        if not isinstance(trace_ids, (list, tuple)) or len(trace_ids) > recent_traces.MAX_TRACES:
            raise BadArguments(f"trace_ids must be a list of at most {recent_traces.MAX_TRACES} trace ids, "
                               f"got {json_type(trace_ids)}")
        return recent_traces.RING.spans(list(trace_ids))

    # -- plumbing -------------------------------------------------------------

    def rpc_methods(self) -> dict[str, Callable]:
        """Every callable the server exposes, by name: the methods above plus one per expert."""
        methods = {name: getattr(self, name) for name, member in inspect.getmembers(type(self))
                   if getattr(member, "rpc", False)}
        for name in self._experts:
            if name in methods:
                raise ValueError(f"expert name {name!r} clashes with the RPC method of that name")
            methods[name] = self._expert_method(name)
        return methods

    def _expert_method(self, name: str) -> Callable:
        expert = self._experts[name]

        needs = self._plan.needs.get(name)
        if needs:
            def method(doc, options=None):
                return self._opinion(name, doc, options)
        else:
            def method(doc):
                return self._opinion(name, doc, None)

        method.__name__ = name
        method.__qualname__ = name
        method.__doc__ = (f"{expert.description or 'Expert ' + name + '.'}\n\n"
                          f"Return the opinion of expert {name!r} (version {expert.version}) "
                          f"on a JSON-object document; it reads "
                          + (f"the {expert.field!r} field." if expert.field is not None
                             else "the whole document."))
        if needs:
            method.__doc__ += (f" It builds on the opinions of {', '.join(needs)}, asked first "
                               f"unless the document carries them; options as for opinions.")
        return _checked_function(method, expert=name)

    def _expert(self, name: Any) -> Expert:
        return self._route(name)[0]

    def _route(self, name: Any) -> tuple[Expert, MicroBatcher, str | None]:
        """The expert, batcher and version (``None``: unversioned) that ``NAME[@VERSION]`` gets."""
        if not isinstance(name, str):
            raise BadArguments(f"expert name must be a string, got {type(name).__name__}")
        versions = self._versions.get(name)
        if versions is not None:  # the common case first: a versioned expert by its name alone
            default = versions.default
            return versions.experts[default], versions.batchers[default], default
        expert = self._experts.get(name)
        if expert is not None:
            return expert, self._batchers[name], None
        try:
            ref = parse_ref(name)
        except ValueError as exc:
            raise UnknownExpert(f"{exc}; this server runs: {', '.join(self._experts)}") from None
        if ref.name not in self._experts:
            raise UnknownExpert(f"unknown expert {shown(ref.name)!r}; this server runs: "
                                f"{', '.join(self._experts)}")
        versions = self._versions.get(ref.name)
        if versions is None:
            raise UnknownExpert(f"expert {ref.name!r} has no versions (its experts-file entry "
                                f"has no versions:); ask for {ref.name!r}")
        version = versions.resolve(ref.version)
        return versions.experts[version], versions.batchers[version], version

    def _names(self, names: list[str] | None) -> list[str]:
        if names is None:
            return list(self._experts)
        for name in names:
            self._expert(name)
        return names

    def _opinion(self, name: Any, doc: Any, options: Any) -> dict:
        """One expert's opinion on one document (its needs asked first), or its error raised."""
        self._expert(name)
        settings = chain_options(options)
        answer = self._answers([doc], [name], settings)[name][0]
        if not answer.ok:
            raise answer.value
        return answer.value

    def _answers(self, docs: list, names: list[str], options: ChainOptions,
                 fields: dict[str, list] | None = None) -> Answers:
        """Every answer of ``names`` and of the experts they need, per expert, for ``docs``.

        An expert that was only needed (not in ``names``) is not asked about a
        document that carries its opinion already, unless ``options`` say fresh.
        ``fields``: per expert, the input value of every document, already read and
        checked (``batch``), so that ``_ask_many`` does not read them again.
        """
        wanted = set(names)
        deadline = current_deadline()  # the calling greenlet's; ``ask`` runs in others
        parent = call_trace.span_context()
        trace = call_trace.current()
        links = trace.links if trace is not None else ()

        def ask(name: str, needed: Answers) -> list[Answer]:
            reuse = name not in wanted and options.reuses(name)
            if not tracing.records(parent):  # tracing off, or the call is not sampled
                return self._ask_many(name, docs, needed, reuse, deadline, parent, links,
                                      trace.log_field() if trace is not None else "")
            with tracing.span(f"expert {name}", parent, attributes={
                    "expertd.expert": name, "expertd.documents": len(docs),
                    "expertd.needs": ",".join(self._plan.needs.get(name, {})) or None,
                    "expertd.asked": name in wanted}) as span:
                answers = self._ask_many(name, docs, needed, reuse, deadline,
                                         span.context if span.recording else parent, links,
                                         trace.log_field() if trace is not None else "",
                                         fields.get(name) if fields else None)
                if span.recording:
                    _record_answers(span, answers)
                return answers

        return chain_runner.run(self._plan, names, ask)

    def _merge_all(self, docs: list, names: list[str], options: ChainOptions) -> list:
        """Ask every expert in ``names`` (and what they need) about every document; merge the answers.

        A document that is not a JSON object is answered ``{"opinions": {}, "errors": {...}}``,
        each expert's ``InvalidDocument`` under its name. An opinion the document
        carried that failed its expert's check is replaced by the recomputed one
        (even when ``include_needs`` is false) and the reason is left under
        ``recomputed.<name>``.
        """
        answers = self._answers(docs, names, options)
        shown = list(answers) if options.include_needs else list(names)
        order = shown + [name for name in answers if name not in shown]  # the rest: if recomputed
        if options.only_opinions and order == shown and len(order) == 1:
            out = self._only_opinions(docs, order[0], answers[order[0]], options)
        else:
            out = [self._merged(doc, i, answers, order, shown, options)
                   for i, doc in enumerate(cooperatively(docs))]
        return [json_answer(answer) for answer in cooperatively(out)] if options.as_json else out

    def _only_opinions(self, docs: list, name: str, column: list[Answer],
                       options: ChainOptions) -> list:
        """``_merge_all`` for one expert and ``only_opinions`` (what a pipe stage asks): a document
        that carries none of ``opinions``, ``errors``, ``recomputed``, ``versions`` and got an
        opinion is answered ``{"opinions": {name: opinion}}`` at once; any other goes through
        ``_merged``. The same answers, without the per-document bookkeeping (bench/RESULTS-limits.md)."""
        out = []
        answers = {name: column}
        order = [name]
        for i, doc in enumerate(cooperatively(docs)):
            answer = column[i]  # (ok, value, reused, recomputed, version)
            if (answer[0] and not answer[2] and answer[4] is None and type(doc) is dict
                    and "opinions" not in doc and "errors" not in doc
                    and "recomputed" not in doc and "versions" not in doc):
                out.append({"opinions": {name: answer[1]}})
            else:
                out.append(self._merged(doc, i, answers, order, order, options))
        return out

    def _merged(self, doc, i: int, answers: Answers, order: list[str], shown: list[str],
                options: ChainOptions) -> dict:
        """Document ``i``'s answer: the experts' ``answers`` merged into it (see ``_merge_all``)."""
        if not isinstance(doc, dict):
            doc = {}  # not an object: only what each expert said of it (InvalidDocument)
        merged = {} if options.only_opinions else dict(doc)
        opinions = dict(doc.get("opinions") or {}) if isinstance(
            doc.get("opinions"), dict) else {}
        errors = dict(doc.get("errors") or {}) if isinstance(
            doc.get("errors"), dict) else {}
        recomputed = dict(doc.get("recomputed") or {}) if isinstance(
            doc.get("recomputed"), dict) else {}
        versions = doc.get("versions") if isinstance(doc.get("versions"), dict) else None
        for name in order:
            answer = answers[name][i]
            if answer.reused or (name not in shown and answer.recomputed is None):
                continue
            if answer.recomputed is not None:
                recomputed[name] = answer.recomputed
                opinions.pop(name, None)  # never the opinion that failed its check
            if answer.ok:
                opinions[name] = answer.value
                errors.pop(name, None)
                if answer.version is not None:
                    versions = dict(versions or {})
                    versions[name] = answer.version
            else:
                errors[name] = error_info(answer.value)
        merged["opinions"] = opinions
        if errors:
            merged["errors"] = errors
        else:
            merged.pop("errors", None)
        if recomputed:
            merged["recomputed"] = recomputed
        if versions:
            merged["versions"] = versions
        return merged

    def _ask_many(self, name: str, docs: list, needed: Answers, reuse: bool,
                  deadline: float | None = None, trace=None, links: tuple = (),
                  log_field: str = "", fields: list | None = None) -> list[Answer]:
        """One expert's ``Answer`` for each document, in one batcher call.

        ``needed`` holds the answers of the experts it needs: where one failed, this
        expert is not asked and answers ``DependencyFailed``. With ``reuse``, an
        opinion the document already carries is the answer. A document the
        expert cannot read, or whose input the expert fails on, gets its own
        error; only whole-call errors (``Overloaded``, ``ShuttingDown``) are
        raised. Validation failures are counted apart from the model's latency.
        ``fields``: every document's input value, already read and checked (all
        valid); used when nothing else needs a per-document look (no reuse, no
        needs, no canary).
        """
        expert, batcher, version = self._route(name)
        needs = self._plan.needs.get(base_name(name), {})
        answers: list[Answer | None] = [None] * len(docs)
        values, positions = [], []
        invalid = 0
        check = batcher.check_opinion
        recomputed: dict[int, str] = {}
        # An unnamed call of a versioned expert with a canary: each document's own version.
        versions = self._versions.get(name)
        canary = versions if versions is not None and versions.canary is not None else None
        chosen: list[str | None] = []
        if fields is not None and not reuse and not needs and canary is None:
            values, positions = list(fields), range(len(fields))  # read and checked by the caller
            docs = ()  # nothing left to read per document
        for i, doc in enumerate(cooperatively(docs)):
            drawn = None  # the canary's draw for this document: made once, used for reuse and routing
            if reuse:
                present = chain_runner.present_opinion(doc, name)
                if present is not None:
                    serving = version if canary is None else self._canary_choice(canary, expert, doc)
                    drawn = serving
                    problem = check(present) if version is None else \
                        _version_problem(name, serving, carried_version(doc, name)) or check(present)
                    if problem is None:
                        answers[i] = Answer(True, present, reused=True)
                        continue
                    recomputed[i] = f"not reused: the document carried {problem}"
            try:
                value = field_value(doc, expert.field, expert.input_type, self._max_text_bytes)
            except ExpertdError as exc:
                answers[i] = Answer(False, exc)
                invalid += 1
                continue
            if needs:  # (an expert without needs skips this per document: bench/RESULTS-profile.md)
                failed = [(dependency, needed[dependency][i].value) for dependency in needs
                          if not needed[dependency][i].ok]
                if failed:
                    answers[i] = Answer(False, chain_runner.dependency_failure(name, failed))
                    continue
            chosen.append(version if canary is None else drawn or canary.choose(value, doc))
            if needs:
                value = chain_runner.chain_input(expert.field, value, needs, needed, i)
            values.append(value)
            positions.append(i)
        if invalid:
            self._stats.record_invalid(base_name(name), invalid)
        if recomputed:
            first = min(recomputed)
            log.warning("expert %s: %d carried opinion(s) failed its check and were recomputed; "
                        "the first: %s%s", name, len(recomputed), shown(recomputed[first], 200), log_field)
            for i, note in recomputed.items():
                if answers[i] is not None:  # not asked after all (e.g. no field): say so anyway
                    answers[i] = answers[i]._replace(recomputed=note)
        if not values:
            return answers
        cache = self._caches.get(name) if version is None else None
        if cache is not None:  # only what the cache does not know goes to the model
            outcomes, hits, misses = cache.predict_through(
                values, lambda asked: self._predict(name, asked, deadline, trace, links))
            self._stats.record_cache(name, hits, misses)
            for i, (ok, answer) in zip(positions, cooperatively(outcomes)):
                # Answer(ok, answer, recomputed=...) built in C, as the uncached path does
                answers[i] = _new_tuple(Answer, (ok, answer, False,
                                                 recomputed.get(i) if recomputed else None, None))
            return answers
        began = time.perf_counter()
        failures = 0
        if canary is None or all(v == version for v in chosen):
            groups = {version: (batcher, values, positions)}
        else:  # the canary's documents and the default's, each to its version's batcher
            groups = {}
            for value, i, v in zip(values, positions, chosen):
                group = groups.setdefault(v, (canary.batchers[v], [], []))
                group[1].append(value)
                group[2].append(i)
        outcomes_of = self._predict_groups(groups, deadline, trace, links)
        for group_version, (_, _, group_positions) in groups.items():
            outcomes = outcomes_of[group_version]
            group_failures = 0
            for i, (ok, answer) in zip(group_positions, cooperatively(outcomes)):
                # Answer(ok, answer, False, ...) without namedtuple's Python-level __new__
                answers[i] = _new_tuple(Answer, (ok, answer, False,
                                                 recomputed.get(i) if recomputed else None,
                                                 group_version))
                group_failures += not ok
            failures += group_failures
            if group_version is not None and self.version_metrics is not None:
                self.version_metrics.record_call(base_name(name), group_version,
                                                 time.perf_counter() - began, group_failures == 0)
        self._stats.record_call(base_name(name), len(values), time.perf_counter() - began,
                                failures == 0)
        if versions is not None and versions.shadow is not None and self.version_metrics is not None:
            self._shadow(versions, groups, outcomes_of)
        return answers

    def _predict(self, name: str, values: list, deadline: float | None, trace=None,
                 links: tuple = ()) -> list:
        """The expert's ``(ok, opinion)`` outcome for each of ``values`` (its batcher), counted;
        ``trace`` and ``links`` are the call's trace context (the model call's span links)."""
        began = time.perf_counter()
        outcomes = self._batchers[name].predict_each(values, deadline, trace, links)
        failures = sum(1 for ok, _ in outcomes if not ok)
        self._stats.record_call(name, len(values), time.perf_counter() - began, failures == 0)
        return outcomes

    def _canary_choice(self, versions: VersionSet, expert: Expert, doc: Any) -> str:
        """The version a document gets under a canary (its field read as for the model)."""
        try:
            value = field_value(doc, expert.field, expert.input_type, self._max_text_bytes)
        except ExpertdError:
            return versions.default
        return versions.choose(value, doc)

    @staticmethod
    def _predict_groups(groups: dict, deadline: float | None, trace=None, links: tuple = ()) -> dict:
        """Each group's outcomes; with two versions (a canary), both batchers run at once."""
        if len(groups) == 1:
            (version, (batcher, values, _)), = groups.items()
            return {version: batcher.predict_each(values, deadline, trace, links)}
        tasks = {version: gevent.spawn(batcher.predict_each, values, deadline, trace, links)
                 for version, (batcher, values, _) in groups.items()}
        gevent.joinall(list(tasks.values()))
        return {version: task.get() for version, task in tasks.items()}

    def _shadow(self, versions: VersionSet, groups: dict, outcomes_of: dict) -> None:
        """Give what the default answered to the shadow version, off the caller's path."""
        shadow, default = versions.shadow, versions.default
        if shadow == default or shadow not in versions.batchers or default not in groups:
            return
        _, values, _ = groups[default]
        spawn_shadow(self.version_metrics, versions.name, default, shadow,
                     versions.batchers[shadow], list(values), list(outcomes_of[default]))




def _version_problem(name: str, version: str, carried: Any) -> str | None:
    """Why a carried opinion of ``name`` cannot stand for ``version``'s (or None if it can)."""
    if carried == version:
        return None
    if carried is None:
        return (f"an opinion with no version recorded (versions.{name}); version {version} "
                f"serves this call")
    return f"an opinion of version {shown(str(carried), 40)}; version {version} serves this call"



def _record_answers(span, answers: list) -> None:
    """An expert span's outcome: how many answers were reused or failed; the first error's name."""
    failed = [a for a in answers if a is not None and not a.ok]
    span.set(**{"expertd.reused": sum(1 for a in answers if a is not None and a.reused),
                "expertd.failed": len(failed)})
    if failed:
        span.fail(type(failed[0].value).__name__, shown(str(failed[0].value), 200))


def _checked_function(fn: Callable, expert: str) -> Callable:
    """``checked_call`` for a per-expert method (a plain function of ``doc``)."""
    return checked_call(fn, inspect.signature(fn), fn.__name__, expert=expert)
